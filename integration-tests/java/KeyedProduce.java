// Sends one record per key (keys read from a file, one per line) with the Java client's default
// partitioner and prints "key<TAB>partition<TAB>offset" for each acknowledged record.
// Run from source by kafkit's integration tests: java -cp '<kafka jars>/*' KeyedProduce.java <bootstrap> <topic> <keys-file>
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Properties;
import java.util.concurrent.Future;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.serialization.StringSerializer;

public class KeyedProduce {
    public static void main(String[] args) throws Exception {
        Properties props = new Properties();
        props.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, args[0]);
        props.put(ProducerConfig.ACKS_CONFIG, "all");
        props.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        props.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        List<String> keys = new ArrayList<>();
        for (String line : Files.readAllLines(Path.of(args[2]), StandardCharsets.UTF_8)) {
            if (!line.isEmpty()) keys.add(line);
        }
        try (KafkaProducer<String, String> producer = new KafkaProducer<>(props)) {
            List<Future<RecordMetadata>> acks = new ArrayList<>();
            for (String key : keys) {
                acks.add(producer.send(new ProducerRecord<>(args[1], key, "java")));
            }
            for (int i = 0; i < keys.size(); i++) {
                RecordMetadata m = acks.get(i).get();
                System.out.println(keys.get(i) + "\t" + m.partition() + "\t" + m.offset());
            }
        }
    }
}
