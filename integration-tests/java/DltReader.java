// Reads every record of a dead-letter topic with the Java client and decodes the dead-letter headers
// the way Spring Kafka does (big-endian int / long, UTF-8 strings). Prints one line per record:
//   <original-topic> <original-partition> <original-offset> <timestamp-type> <group> <attempts> <exception-fqcn> | <message>
// Run from source: java -cp '<kafka jars>/*' DltReader.java <bootstrap> <dlt-topic>
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.*;
import org.apache.kafka.clients.consumer.*;
import org.apache.kafka.common.PartitionInfo;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.header.Header;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;

public class DltReader {
    public static void main(String[] args) {
        Properties props = new Properties();
        props.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, args[0]);
        props.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
        props.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
        props.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        try (KafkaConsumer<byte[], byte[]> c = new KafkaConsumer<>(props)) {
            List<TopicPartition> tps = new ArrayList<>();
            for (PartitionInfo p : c.partitionsFor(args[1])) tps.add(new TopicPartition(args[1], p.partition()));
            c.assign(tps);
            c.seekToBeginning(tps);
            Map<TopicPartition, Long> end = c.endOffsets(tps);
            long deadline = System.currentTimeMillis() + 30_000;
            while (System.currentTimeMillis() < deadline) {
                for (ConsumerRecord<byte[], byte[]> r : c.poll(Duration.ofMillis(200))) {
                    System.out.println(str(r, "kafka_dlt-original-topic") + " "
                            + ByteBuffer.wrap(bytes(r, "kafka_dlt-original-partition")).getInt() + " "
                            + ByteBuffer.wrap(bytes(r, "kafka_dlt-original-offset")).getLong() + " "
                            + str(r, "kafka_dlt-original-timestamp-type") + " "
                            + str(r, "kafka_dlt-original-consumer-group") + " "
                            + ByteBuffer.wrap(bytes(r, "kafkit_dlt-attempts")).getInt() + " "
                            + str(r, "kafka_dlt-exception-fqcn") + " | "
                            + str(r, "kafka_dlt-exception-message"));
                }
                boolean done = true;
                for (TopicPartition tp : tps) if (c.position(tp) < end.get(tp)) done = false;
                if (done) break;
            }
        }
    }

    static byte[] bytes(ConsumerRecord<byte[], byte[]> r, String name) {
        Header h = r.headers().lastHeader(name);
        if (h == null) throw new IllegalStateException("missing header " + name);
        return h.value();
    }

    static String str(ConsumerRecord<byte[], byte[]> r, String name) {
        return new String(bytes(r, name), StandardCharsets.UTF_8);
    }
}
