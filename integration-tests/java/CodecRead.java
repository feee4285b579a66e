// Reads every record of one-partition topics with the Java client (which decompresses with
// snappy-java, lz4-java and zstd-jni), for the test of kafkit's producer codecs. Prints one line per
// record: <topic> <offset> <key> <value> <headers>, where bytes are hex, a null is "-", and headers
// are "name=value" pairs joined by "," in order ("" when there are none, "." for no headers).
// Run from source: java -cp '<kafka jars>/*' CodecRead.java <bootstrap> <topic>...
import java.time.Duration;
import java.util.*;
import org.apache.kafka.clients.consumer.*;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.header.Header;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;

public class CodecRead {
    public static void main(String[] args) {
        Properties props = new Properties();
        props.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, args[0]);
        props.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
        props.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
        props.put(ConsumerConfig.CHECK_CRCS_CONFIG, "true");
        try (KafkaConsumer<byte[], byte[]> c = new KafkaConsumer<>(props)) {
            for (int t = 1; t < args.length; t++) {
                TopicPartition tp = new TopicPartition(args[t], 0);
                c.assign(List.of(tp));
                c.seekToBeginning(List.of(tp));
                long end = c.endOffsets(List.of(tp)).get(tp);
                long deadline = System.currentTimeMillis() + 60_000;
                while (c.position(tp) < end && System.currentTimeMillis() < deadline) {
                    for (ConsumerRecord<byte[], byte[]> r : c.poll(Duration.ofMillis(200))) {
                        StringBuilder headers = new StringBuilder();
                        for (Header h : r.headers()) {
                            if (headers.length() > 0) headers.append(',');
                            headers.append(hex(h.key().getBytes(java.nio.charset.StandardCharsets.UTF_8)))
                                    .append('=').append(hex(h.value()));
                        }
                        System.out.println(r.topic() + " " + r.offset() + " " + hex(r.key()) + " "
                                + hex(r.value()) + " " + (headers.length() == 0 ? "." : headers));
                    }
                }
            }
        }
    }

    static String hex(byte[] bytes) {
        if (bytes == null) return "-";
        StringBuilder s = new StringBuilder();
        for (byte b : bytes) s.append(String.format("%02x", b));
        return s.toString();
    }
}
