//! Java-compatible key partitioning.
//!
//! The Java producer sends a keyed record to `toPositive(murmur2(serializedKey)) % numPartitions`
//! (`BuiltInPartitioner.partitionForKey`). Every client in a system must agree on this, or the same key
//! lands on two partitions and per-key order breaks. kafkit uses the same function on the same bytes.

/// Kafka's variant of MurmurHash2 (seed `0x9747b28c`), bit-for-bit the Java client's `Utils.murmur2`.
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;

    let len = data.len();
    let mut h: u32 = SEED ^ (len as u32);

    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }

    let tail = chunks.remainder();
    if !tail.is_empty() {
        // Java falls through the cases 3, 2, 1; the same as xoring each present byte at its position.
        for (i, &b) in tail.iter().enumerate().rev() {
            h ^= u32::from(b) << (8 * i);
        }
        h = h.wrapping_mul(M);
    }

    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// Java's `Utils.toPositive`: clears the sign bit (not `abs`, which overflows on `i32::MIN`).
pub fn to_positive(n: i32) -> i32 {
    n & 0x7fff_ffff
}

/// The partition the Java client chooses for `key` on a topic with `partitions` partitions.
///
/// ```
/// assert_eq!(kafkit_core::partitioner::partition_for_key(b"foobar", 12), 6);
/// ```
///
/// # Panics
/// If `partitions` is not positive; topics always have at least one partition.
pub fn partition_for_key(key: &[u8], partitions: i32) -> i32 {
    assert!(partitions > 0, "a topic has at least one partition");
    to_positive(murmur2(key)) % partitions
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Vectors from the Java client's own unit tests for `Utils.murmur2`.
    #[test]
    fn murmur2_matches_java_vectors() {
        let cases: [(&[u8], i32); 6] = [
            (b"21", -973_932_308),
            (b"foobar", -790_332_482),
            (b"a-little-bit-long-string", -985_981_536),
            (b"a-little-bit-longer-string", -1_486_304_829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            (b"abc", 479_470_107),
        ];
        for (input, expected) in cases {
            assert_eq!(
                murmur2(input),
                expected,
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn to_positive_clears_sign_bit() {
        assert_eq!(to_positive(-1), i32::MAX);
        assert_eq!(to_positive(i32::MIN), 0);
        assert_eq!(to_positive(42), 42);
    }

    #[test]
    fn partition_is_in_range_and_stable() {
        for n in 1..50 {
            for key in [&b""[..], b"k", b"key-17", b"\xff\xfe\xfd"] {
                let p = partition_for_key(key, n);
                assert!((0..n).contains(&p));
                assert_eq!(p, partition_for_key(key, n));
            }
        }
    }
}
