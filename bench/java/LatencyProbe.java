// The Java client's latency probe for kafkit-bench: joins a new group on the topic, prints "ready"
// once partitions are assigned, then takes each record's latency as it comes out of poll():
// from its send time (the first 8 bytes of the value, µs since the epoch) and from the broker's
// append (the topic's LogAppendTime timestamps). Prints one line:
// "result <n> <e2e p50> <p99> <p99.9> <consumer p50> <p99> <p99.9>" (µs).
// Usage: LatencyProbe <bootstrap> <topic> <records> <group>

import java.nio.ByteBuffer;
import java.time.Duration;
import java.time.Instant;
import java.util.Arrays;
import java.util.Collection;
import java.util.List;
import java.util.Properties;
import org.apache.kafka.clients.consumer.ConsumerRebalanceListener;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;

public class LatencyProbe {
    public static void main(String[] args) {
        String bootstrap = args[0];
        String topic = args[1];
        int records = Integer.parseInt(args[2]);
        String group = args[3];
        Properties props = new Properties();
        props.put("bootstrap.servers", bootstrap);
        props.put("group.id", group);
        // A fresh topic, its measured records produced only after "ready" (the warm-up before it is
        // skipped): earliest loses nothing.
        props.put("auto.offset.reset", "earliest");
        props.put("fetch.max.wait.ms", "100");
        props.put("key.deserializer", ByteArrayDeserializer.class.getName());
        props.put("value.deserializer", ByteArrayDeserializer.class.getName());
        long[] endToEnd = new long[records];
        long[] consumer = new long[records];
        int n = 0;
        boolean[] announced = {false};
        try (KafkaConsumer<byte[], byte[]> c = new KafkaConsumer<>(props)) {
            c.subscribe(List.of(topic), new ConsumerRebalanceListener() {
                public void onPartitionsRevoked(Collection<TopicPartition> parts) {}

                public void onPartitionsAssigned(Collection<TopicPartition> parts) {
                    if (!parts.isEmpty() && !announced[0]) {
                        announced[0] = true;
                        System.out.println("ready");
                        System.out.flush();
                    }
                }
            });
            while (n < records) {
                for (ConsumerRecord<byte[], byte[]> r : c.poll(Duration.ofMillis(100))) {
                    long now = nowMicros();
                    long sent = ByteBuffer.wrap(r.value(), 0, 8).getLong();
                    if (sent == 0) {
                        continue; // the runner's warm-up traffic
                    }
                    endToEnd[n] = Math.max(0, now - sent);
                    consumer[n] = Math.max(0, now - r.timestamp() * 1000);
                    n++;
                    if (n == records) {
                        break;
                    }
                }
            }
        }
        System.out.println("result " + n + " " + percentiles(endToEnd) + " " + percentiles(consumer));
    }

    static long nowMicros() {
        Instant now = Instant.now();
        return now.getEpochSecond() * 1_000_000L + now.getNano() / 1_000;
    }

    static String percentiles(long[] samples) {
        long[] sorted = samples.clone();
        Arrays.sort(sorted);
        return at(sorted, 0.50) + " " + at(sorted, 0.99) + " " + at(sorted, 0.999);
    }

    static long at(long[] sorted, double q) {
        return sorted[(int) Math.round((sorted.length - 1) * q)];
    }
}
