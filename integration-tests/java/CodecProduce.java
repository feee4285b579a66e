// Writes the same records, compressed with each codec it is given, for kafkit's codec tests: one
// producer per codec (compression.type), one topic per codec, partition 0.
// Record i: key "key-i" (null when i % 100 == 7), value "value-i-" and 40 repeats of "abc" (null when
// i % 250 == 11), headers in this order: trace="t1-i", n=null, trace="t2-i", empty="" .
// Run from source by kafkit's integration tests:
//   java -cp '<kafka jars>/*' CodecProduce.java <bootstrap> <count> <codec>=<topic>...
// Prints "<codec> <count>" once each codec's records are all acknowledged.
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import java.util.Properties;
import java.util.concurrent.Future;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.header.internals.RecordHeaders;
import org.apache.kafka.common.serialization.ByteArraySerializer;

public class CodecProduce {
    static byte[] utf8(String s) {
        return s == null ? null : s.getBytes(StandardCharsets.UTF_8);
    }

    public static void main(String[] args) throws Exception {
        String bootstrap = args[0];
        int count = Integer.parseInt(args[1]);
        for (int a = 2; a < args.length; a++) {
            String[] pair = args[a].split("=", 2);
            String codec = pair[0];
            String topic = pair[1];
            Properties props = new Properties();
            props.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
            props.put(ProducerConfig.ACKS_CONFIG, "all");
            props.put(ProducerConfig.COMPRESSION_TYPE_CONFIG, codec);
            // Many records per batch, so the codecs compress whole batches.
            props.put(ProducerConfig.LINGER_MS_CONFIG, "50");
            props.put(ProducerConfig.BATCH_SIZE_CONFIG, "65536");
            props.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
            props.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
            try (KafkaProducer<byte[], byte[]> producer = new KafkaProducer<>(props)) {
                List<Future<RecordMetadata>> acks = new ArrayList<>();
                for (int i = 0; i < count; i++) {
                    String key = i % 100 == 7 ? null : "key-" + i;
                    String value = i % 250 == 11 ? null : "value-" + i + "-" + "abc".repeat(40);
                    RecordHeaders headers = new RecordHeaders();
                    headers.add("trace", utf8("t1-" + i));
                    headers.add("n", null);
                    headers.add("trace", utf8("t2-" + i));
                    headers.add("empty", new byte[0]);
                    acks.add(producer.send(
                        new ProducerRecord<>(topic, 0, null, utf8(key), utf8(value), headers)));
                }
                for (Future<RecordMetadata> ack : acks) {
                    ack.get();
                }
            }
            System.out.println(codec + " " + count);
        }
    }
}
