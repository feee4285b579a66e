// A Java KafkaConsumer driven by kafkit's integration tests, to check wire compatibility of groups.
// Run from source: java -cp '<kafka jars>/*' GroupClient.java <mode> <bootstrap> <group> <topic> [args]
//   member <assignor> [instance-id]  join with the given assignor, print ownership changes, poll until stdin closes
//   first-offsets <n>                subscribe, print "first <partition> <offset>" for the first record of n partitions
//   commit <p:o,p:o,...>             commit these offsets for the group (no subscription) and exit
//   consume <assignor>               like member, but ownership lines carry the time ("assigned <micros> t:p ..."),
//                                    each record prints "consumed <partition> <offset> <micros>", and every poll
//                                    is followed by commitSync() (at least once, like a plain Java consumer);
//                                    <micros> is wall-clock microseconds since the epoch; the assignor
//                                    `consumer-protocol[:<remote assignor>]` joins with the KIP-848 protocol
//                                    (group.protocol=consumer, the broker assigns)
import java.time.Duration;
import java.util.*;
import org.apache.kafka.clients.consumer.*;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;

public class GroupClient {
    public static void main(String[] args) throws Exception {
        String mode = args[0], bootstrap = args[1], group = args[2], topic = args[3];
        Properties props = new Properties();
        props.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        props.put(ConsumerConfig.GROUP_ID_CONFIG, group);
        props.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
        props.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        props.put(ConsumerConfig.SESSION_TIMEOUT_MS_CONFIG, "10000");
        props.put(ConsumerConfig.HEARTBEAT_INTERVAL_MS_CONFIG, "1000");
        props.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
        props.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
        switch (mode) {
            case "member": {
                String assignor = args[4];
                String cls = assignor.equals("range") ? RangeAssignor.class.getName()
                        : assignor.equals("roundrobin") ? RoundRobinAssignor.class.getName()
                        : CooperativeStickyAssignor.class.getName();
                props.put(ConsumerConfig.PARTITION_ASSIGNMENT_STRATEGY_CONFIG, cls);
                if (args.length > 5) props.put(ConsumerConfig.GROUP_INSTANCE_ID_CONFIG, args[5]);
                try (KafkaConsumer<byte[], byte[]> c = new KafkaConsumer<>(props)) {
                    c.subscribe(List.of(topic), new ConsumerRebalanceListener() {
                        public void onPartitionsAssigned(Collection<TopicPartition> ps) { print("assigned", ps); }
                        public void onPartitionsRevoked(Collection<TopicPartition> ps) { print("revoked", ps); }
                        public void onPartitionsLost(Collection<TopicPartition> ps) { print("lost", ps); }
                    });
                    Thread stdin = new Thread(() -> {
                        try { while (System.in.read() != -1) {} } catch (Exception e) {}
                        c.wakeup();
                    });
                    stdin.setDaemon(true);
                    stdin.start();
                    try {
                        while (true) c.poll(Duration.ofMillis(200));
                    } catch (org.apache.kafka.common.errors.WakeupException e) {
                        // stdin closed: leave the group cleanly
                    }
                }
                break;
            }
            case "consume": {
                String assignor = args[4];
                if (assignor.startsWith("consumer-protocol")) {
                    // The broker assigns and sets the timeouts: the classic-only settings must be absent.
                    props.remove(ConsumerConfig.SESSION_TIMEOUT_MS_CONFIG);
                    props.remove(ConsumerConfig.HEARTBEAT_INTERVAL_MS_CONFIG);
                    props.put(ConsumerConfig.GROUP_PROTOCOL_CONFIG, "consumer");
                    String[] parts = assignor.split(":");
                    if (parts.length > 1) props.put(ConsumerConfig.GROUP_REMOTE_ASSIGNOR_CONFIG, parts[1]);
                } else {
                    props.put(ConsumerConfig.PARTITION_ASSIGNMENT_STRATEGY_CONFIG, assignorClass(assignor));
                }
                try (KafkaConsumer<byte[], byte[]> c = new KafkaConsumer<>(props)) {
                    c.subscribe(List.of(topic), new ConsumerRebalanceListener() {
                        public void onPartitionsAssigned(Collection<TopicPartition> ps) { print("assigned " + micros(), ps); }
                        public void onPartitionsRevoked(Collection<TopicPartition> ps) { print("revoked " + micros(), ps); }
                        public void onPartitionsLost(Collection<TopicPartition> ps) { print("lost " + micros(), ps); }
                    });
                    Thread stdin = new Thread(() -> {
                        try { while (System.in.read() != -1) {} } catch (Exception e) {}
                        c.wakeup();
                    });
                    stdin.setDaemon(true);
                    stdin.start();
                    try {
                        while (true) {
                            ConsumerRecords<byte[], byte[]> records = c.poll(Duration.ofMillis(200));
                            if (records.isEmpty()) continue;
                            // Printed before the commit and before the next poll (where revocations happen),
                            // so every line is for a partition owned at <micros>.
                            long at = micros();
                            StringBuilder sb = new StringBuilder();
                            for (ConsumerRecord<byte[], byte[]> r : records) {
                                sb.append("consumed ").append(r.partition()).append(' ').append(r.offset())
                                        .append(' ').append(at).append('\n');
                            }
                            System.out.print(sb);
                            System.out.flush();
                            try {
                                c.commitSync();
                            } catch (org.apache.kafka.clients.consumer.CommitFailedException
                                    | org.apache.kafka.common.errors.RebalanceInProgressException e) {
                                // The partitions moved on: their next owner reads from the last commit.
                                System.err.println("commit failed: " + e);
                            }
                        }
                    } catch (org.apache.kafka.common.errors.WakeupException e) {
                        // stdin closed: leave the group cleanly
                    }
                }
                break;
            }
            case "first-offsets": {
                int n = Integer.parseInt(args[4]);
                Map<Integer, Long> first = new TreeMap<>();
                try (KafkaConsumer<byte[], byte[]> c = new KafkaConsumer<>(props)) {
                    c.subscribe(List.of(topic));
                    long end = System.currentTimeMillis() + 60_000;
                    while (first.size() < n && System.currentTimeMillis() < end) {
                        for (ConsumerRecord<byte[], byte[]> r : c.poll(Duration.ofMillis(200))) {
                            first.putIfAbsent(r.partition(), r.offset());
                        }
                    }
                }
                first.forEach((p, o) -> System.out.println("first " + p + " " + o));
                break;
            }
            case "commit": {
                Map<TopicPartition, OffsetAndMetadata> offsets = new HashMap<>();
                for (String po : args[4].split(",")) {
                    String[] f = po.split(":");
                    offsets.put(new TopicPartition(topic, Integer.parseInt(f[0])), new OffsetAndMetadata(Long.parseLong(f[1])));
                }
                try (KafkaConsumer<byte[], byte[]> c = new KafkaConsumer<>(props)) {
                    c.commitSync(offsets);
                }
                System.out.println("committed");
                break;
            }
            default:
                throw new IllegalArgumentException("unknown mode " + mode);
        }
    }

    static String assignorClass(String assignor) {
        return assignor.equals("range") ? RangeAssignor.class.getName()
                : assignor.equals("roundrobin") ? RoundRobinAssignor.class.getName()
                : CooperativeStickyAssignor.class.getName();
    }

    static long micros() {
        java.time.Instant now = java.time.Instant.now();
        return now.getEpochSecond() * 1_000_000L + now.getNano() / 1_000;
    }

    static void print(String what, Collection<TopicPartition> ps) {
        StringBuilder sb = new StringBuilder(what);
        List<TopicPartition> sorted = new ArrayList<>(ps);
        sorted.sort(Comparator.comparing(TopicPartition::topic).thenComparingInt(TopicPartition::partition));
        for (TopicPartition tp : sorted) sb.append(' ').append(tp.topic()).append(':').append(tp.partition());
        System.out.println(sb);
        System.out.flush();
    }
}
