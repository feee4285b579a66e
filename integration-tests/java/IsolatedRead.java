// Reads a topic from the beginning to its end with one isolation level, for kafkit's transaction tests.
// Run from source: java -cp '<kafka jars>/*' IsolatedRead.java <bootstrap> <topic> <read_committed|read_uncommitted>
// Prints "<partition> <offset> <value>" per record, then "read <count>". The end is the last stable
// offset (read_committed) or the high watermark (read_uncommitted), as the consumer's endOffsets gives it.
import java.time.Duration;
import java.util.*;
import org.apache.kafka.clients.consumer.*;
import org.apache.kafka.common.PartitionInfo;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.*;

public class IsolatedRead {
    public static void main(String[] args) throws Exception {
        String bootstrap = args[0], topic = args[1], isolation = args[2];
        Properties props = new Properties();
        props.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        props.put(ConsumerConfig.ISOLATION_LEVEL_CONFIG, isolation);
        props.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
        props.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        int count = 0;
        try (KafkaConsumer<byte[], String> consumer = new KafkaConsumer<>(props)) {
            List<TopicPartition> tps = new ArrayList<>();
            for (PartitionInfo p : consumer.partitionsFor(topic)) tps.add(new TopicPartition(topic, p.partition()));
            consumer.assign(tps);
            consumer.seekToBeginning(tps);
            Map<TopicPartition, Long> ends = consumer.endOffsets(tps);
            long deadline = System.currentTimeMillis() + 60_000;
            while (tps.stream().anyMatch(tp -> consumer.position(tp) < ends.get(tp))) {
                if (System.currentTimeMillis() > deadline) throw new IllegalStateException("end not reached: " + ends);
                for (ConsumerRecord<byte[], String> r : consumer.poll(Duration.ofMillis(200))) {
                    System.out.println(r.partition() + " " + r.offset() + " " + r.value());
                    count++;
                }
            }
        }
        System.out.println("read " + count);
    }
}
