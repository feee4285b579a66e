// Prints one record batch per codec as the Java client writes it (Kafka's own MemoryRecords
// builder, with lz4-java, zstd-jni and snappy-java), as hex: the fixtures of kafkit-core's decoder
// tests (`java_batches_decode` in crates/core/src/wire/records.rs), so every codec is proven
// against Java's bytes without a broker. Regenerate with
//   java -cp '<kafka jars>/*' BatchFixtures.java
// Records (base offset 100, CreateTime 1700000000000 + i): key "k<i>", value "v<i>" and 20 repeats
// of "xyz", headers dup=a, dup=b, nul=null, and record 1 has a null key.
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.util.HexFormat;
import org.apache.kafka.common.compress.Compression;
import org.apache.kafka.common.header.Header;
import org.apache.kafka.common.header.internals.RecordHeader;
import org.apache.kafka.common.record.MemoryRecords;
import org.apache.kafka.common.record.RecordBatch;
import org.apache.kafka.common.record.SimpleRecord;
import org.apache.kafka.common.record.TimestampType;

public class BatchFixtures {
    static byte[] utf8(String s) {
        return s.getBytes(StandardCharsets.UTF_8);
    }

    public static void main(String[] args) {
        Compression[] codecs = {
            Compression.NONE,
            Compression.gzip().build(),
            Compression.snappy().build(),
            Compression.lz4().build(),
            Compression.zstd().build(),
        };
        for (Compression codec : codecs) {
            SimpleRecord[] records = new SimpleRecord[3];
            for (int i = 0; i < 3; i++) {
                Header[] headers = {
                    new RecordHeader("dup", utf8("a")),
                    new RecordHeader("dup", utf8("b")),
                    new RecordHeader("nul", (byte[]) null),
                };
                byte[] key = i == 1 ? null : utf8("k" + i);
                records[i] = new SimpleRecord(1700000000000L + i, key, utf8("v" + i + "xyz".repeat(20)), headers);
            }
            MemoryRecords batch = MemoryRecords.withRecords(
                RecordBatch.MAGIC_VALUE_V2, 100L, codec, TimestampType.CREATE_TIME, records);
            ByteBuffer buffer = batch.buffer();
            byte[] bytes = new byte[buffer.remaining()];
            buffer.get(bytes);
            System.out.println(codec.type().name + " " + HexFormat.of().formatHex(bytes));
        }
    }
}
