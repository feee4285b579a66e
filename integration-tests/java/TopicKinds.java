// Writes the topic kinds whose offsets carry no record for a consumer, for kafkit's integration tests.
// Run from source: java -cp '<kafka jars>/*' TopicKinds.java <mode> <bootstrap> <topic> [args]
//   transactions <transactions> <records>  a transactional producer writes <transactions> transactions
//                                          of <records> records to every partition; every third one
//                                          (t % 3 == 1) is aborted, the others committed. Values are
//                                          "committed-<t>-<i>" or "aborted-<t>-<i>"; keys "k-<i>".
//                                          Prints "committed <count>" (records in committed transactions).
//   compacted <partitions> <keys> <rounds> creates the topic compacted with small segments, writes
//                                          <rounds> values of every key (value "<round>"), each round
//                                          after a key of its own ("once-<round>"), then waits
//                                          until the log cleaner removed superseded records and prints
//                                          "remaining <count> of <written>".
import java.time.Duration;
import java.util.*;
import org.apache.kafka.clients.admin.*;
import org.apache.kafka.clients.consumer.*;
import org.apache.kafka.clients.producer.*;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.*;

public class TopicKinds {
    public static void main(String[] args) throws Exception {
        String mode = args[0], bootstrap = args[1], topic = args[2];
        switch (mode) {
            case "transactions": transactions(bootstrap, topic, Integer.parseInt(args[3]), Integer.parseInt(args[4])); break;
            case "compacted": compacted(bootstrap, topic, Integer.parseInt(args[3]), Integer.parseInt(args[4]), Integer.parseInt(args[5])); break;
            default: throw new IllegalArgumentException("unknown mode " + mode);
        }
    }

    static Properties producerProps(String bootstrap) {
        Properties props = new Properties();
        props.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        props.put(ProducerConfig.ACKS_CONFIG, "all");
        props.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        props.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        return props;
    }

    static void transactions(String bootstrap, String topic, int transactions, int records) throws Exception {
        Properties props = producerProps(bootstrap);
        props.put(ProducerConfig.TRANSACTIONAL_ID_CONFIG, "kafkit-test-" + topic);
        int committed = 0;
        try (KafkaProducer<String, String> producer = new KafkaProducer<>(props)) {
            int partitions = producer.partitionsFor(topic).size();
            producer.initTransactions();
            for (int t = 0; t < transactions; t++) {
                boolean abort = t % 3 == 1;
                producer.beginTransaction();
                for (int p = 0; p < partitions; p++) {
                    for (int i = 0; i < records; i++) {
                        String value = (abort ? "aborted-" : "committed-") + t + "-" + i;
                        producer.send(new ProducerRecord<>(topic, p, "k-" + i, value));
                    }
                }
                if (abort) {
                    producer.abortTransaction();
                } else {
                    producer.commitTransaction();
                    committed += partitions * records;
                }
            }
        }
        System.out.println("committed " + committed);
    }

    static void compacted(String bootstrap, String topic, int partitions, int keys, int rounds) throws Exception {
        Properties admin = new Properties();
        admin.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        try (Admin client = Admin.create(admin)) {
            Map<String, String> configs = Map.of(
                    "cleanup.policy", "compact",
                    "segment.ms", "100",
                    "min.cleanable.dirty.ratio", "0.01",
                    "min.compaction.lag.ms", "0",
                    "delete.retention.ms", "0");
            client.createTopics(List.of(new NewTopic(topic, partitions, (short) 1).configs(configs))).all().get();
        }
        int written = 0;
        try (KafkaProducer<String, String> producer = new KafkaProducer<>(producerProps(bootstrap))) {
            for (int round = 0; round < rounds; round++) {
                for (int p = 0; p < partitions; p++) {
                    // A key written once, never superseded: what survives is spread over the log.
                    producer.send(new ProducerRecord<>(topic, p, "once-" + round, "once-" + round));
                    written++;
                    for (int k = 0; k < keys; k++) {
                        producer.send(new ProducerRecord<>(topic, p, "key-" + k, Integer.toString(round)));
                        written++;
                    }
                }
                producer.flush();
                // Past segment.ms, so the next round starts a new segment the cleaner can compact.
                Thread.sleep(150);
            }
        }
        Properties props = new Properties();
        props.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        props.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
        props.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
        long deadline = System.currentTimeMillis() + 90_000;
        try (KafkaConsumer<byte[], byte[]> consumer = new KafkaConsumer<>(props)) {
            List<TopicPartition> tps = new ArrayList<>();
            for (int p = 0; p < partitions; p++) tps.add(new TopicPartition(topic, p));
            consumer.assign(tps);
            while (true) {
                Map<TopicPartition, Long> ends = consumer.endOffsets(tps);
                consumer.seekToBeginning(tps);
                Map<Integer, Integer> perPartition = new HashMap<>();
                while (tps.stream().anyMatch(tp -> consumer.position(tp) < ends.get(tp))) {
                    for (ConsumerRecord<byte[], byte[]> r : consumer.poll(Duration.ofMillis(200))) {
                        perPartition.merge(r.partition(), 1, Integer::sum);
                    }
                }
                int remaining = perPartition.values().stream().mapToInt(Integer::intValue).sum();
                // Every partition compacted, not just some: each must have lost records.
                boolean everyPartition = true;
                for (int p = 0; p < partitions; p++) {
                    everyPartition &= perPartition.getOrDefault(p, 0) < (keys + 1) * rounds;
                }
                if (everyPartition || System.currentTimeMillis() > deadline) {
                    System.out.println("remaining " + remaining + " of " + written);
                    return;
                }
                Thread.sleep(500);
            }
        }
    }
}
