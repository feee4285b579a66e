//! The offset map: which records above a committed watermark are already processed, kept in the
//! commit's metadata string so the next owner of the partition skips them.
//!
//! With key-ordered or unordered dispatch, records finish out of order; the commit names the
//! contiguous watermark `W`, and records above it that finished would be delivered again after a
//! restart or rebalance. The map avoids that. Its text form is
//!
//! ```text
//! kk1:<W>:<kind><data>
//! ```
//!
//! - `kk1:` marks kafkit's version-1 map; metadata without it (set by users or other clients) is
//!   ignored, never an error.
//! - `<W>` is the committed offset in decimal. A map whose base differs from the offset it was
//!   committed with is stale and ignored (the decoder checks).
//! - `<kind>` is `b` or `r`, `<data>` URL-safe base64 without padding of:
//!   - `b` (bitset): bit `i` of the bytes (least significant bit first) set when offset `W + 1 + i` is
//!     done — dense sets;
//!   - `r` (runs): LEB128 varint lengths of alternating runs starting at `W + 1`, the first run "not
//!     done", then "done", and so on — long runs and sparse sets.
//!
//! The encoder writes whichever is shorter. The broker caps metadata at `offset.metadata.max.bytes`
//! (4096 by default); a map that does not fit is an error the caller handles (it commits the
//! watermark alone), never silently truncated.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

const TAG: &str = "kk1:";

/// The most offsets a decoded map may span; bounds memory on corrupt or hostile input.
const MAX_SPAN: u64 = 10_000_000;

/// The map does not fit the metadata size limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the offset map needs {needed} bytes, more than the {max_len} allowed (offset.metadata.max.bytes)"
)]
pub(crate) struct OffsetMapTooLarge {
    pub(crate) needed: usize,
    pub(crate) max_len: usize,
}

/// A kafkit offset map that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum OffsetMapError {
    /// The map was written for another committed offset (a later commit without a map replaced it).
    #[error("offset map is for offset {base}, but the committed offset is {committed}")]
    Stale { base: i64, committed: i64 },
    /// The map's text is not a valid kafkit map.
    #[error("corrupt offset map: {reason}")]
    Corrupt { reason: String },
}

/// Encodes `done_above` (sorted ascending, every offset above `watermark`) as a metadata string of at
/// most `max_len` bytes. `Ok(None)` when there is nothing to record.
pub(crate) fn encode(
    watermark: i64,
    done_above: &[i64],
    max_len: usize,
) -> Result<Option<String>, OffsetMapTooLarge> {
    let Some(&highest) = done_above.last() else {
        return Ok(None);
    };
    debug_assert!(
        done_above.windows(2).all(|w| w[0] < w[1]),
        "offsets sorted and distinct"
    );
    debug_assert!(
        done_above.first().is_some_and(|&o| o > watermark),
        "offsets above the watermark"
    );
    let span = (highest - watermark) as u64;

    let mut bits = vec![0u8; span.div_ceil(8) as usize];
    for &o in done_above {
        let i = (o - watermark - 1) as usize;
        bits[i / 8] |= 1 << (i % 8);
    }

    let mut runs = Vec::new();
    let mut next = watermark + 1;
    for group in done_above.chunk_by(|a, b| b - a == 1) {
        let (first, last) = (group[0], group[group.len() - 1]);
        push_varint(&mut runs, (first - next) as u64);
        push_varint(&mut runs, (last - first + 1) as u64);
        next = last + 1;
    }

    let (kind, data) = if runs.len() < bits.len() {
        ('r', runs)
    } else {
        ('b', bits)
    };
    let text = format!("{TAG}{watermark}:{kind}{}", URL_SAFE_NO_PAD.encode(data));
    if text.len() > max_len {
        return Err(OffsetMapTooLarge {
            needed: text.len(),
            max_len,
        });
    }
    Ok(Some(text))
}

/// The done offsets recorded in `metadata` for a partition committed at `committed_offset`.
/// `Ok(None)` for metadata that is not a kafkit map.
pub(crate) fn decode(
    committed_offset: i64,
    metadata: &str,
) -> Result<Option<Vec<i64>>, OffsetMapError> {
    let Some(rest) = metadata.strip_prefix(TAG) else {
        return Ok(None);
    };
    let corrupt = |reason: &str| OffsetMapError::Corrupt {
        reason: reason.to_owned(),
    };
    let (base, body) = rest
        .split_once(':')
        .ok_or_else(|| corrupt("no base offset"))?;
    let base: i64 = base
        .parse()
        .map_err(|_| corrupt("base offset is not a number"))?;
    if base != committed_offset {
        return Err(OffsetMapError::Stale {
            base,
            committed: committed_offset,
        });
    }
    let mut chars = body.chars();
    let kind = chars.next().ok_or_else(|| corrupt("no encoding kind"))?;
    let data = URL_SAFE_NO_PAD
        .decode(chars.as_str())
        .map_err(|_| corrupt("data is not URL-safe base64"))?;
    let mut out = Vec::new();
    match kind {
        'b' => {
            if data.len() as u64 * 8 > MAX_SPAN {
                return Err(corrupt("bitset spans too many offsets"));
            }
            for (i, byte) in data.iter().enumerate() {
                for bit in 0..8 {
                    if byte & (1 << bit) != 0 {
                        out.push(
                            offset_at(base, (i * 8 + bit) as u64 + 1)
                                .ok_or_else(|| corrupt("offset overflow"))?,
                        );
                    }
                }
            }
        }
        'r' => {
            let mut pos = 0usize;
            let mut cursor: u64 = 1;
            let mut done = false;
            while pos < data.len() {
                let len =
                    read_varint(&data, &mut pos).ok_or_else(|| corrupt("truncated run length"))?;
                let end = cursor
                    .checked_add(len)
                    .filter(|&e| e <= MAX_SPAN + 1)
                    .ok_or_else(|| corrupt("runs span too many offsets"))?;
                if done {
                    for d in cursor..end {
                        out.push(offset_at(base, d).ok_or_else(|| corrupt("offset overflow"))?);
                    }
                }
                cursor = end;
                done = !done;
            }
        }
        _ => return Err(corrupt("unknown encoding kind")),
    }
    Ok(Some(out))
}

fn offset_at(base: i64, delta: u64) -> Option<i64> {
    base.checked_add(i64::try_from(delta).ok()?)
}

fn push_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn read_varint(data: &[u8], pos: &mut usize) -> Option<u64> {
    let mut v: u64 = 0;
    for shift in (0..64).step_by(7) {
        let b = *data.get(*pos)?;
        *pos += 1;
        v |= u64::from(b & 0x7f).checked_shl(shift)?;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn table() {
        let cases: &[(i64, &[i64])] = &[
            (0, &[1]),
            (100, &[101, 102, 103]),
            (100, &[150]),
            (5, &[6, 8, 10, 12, 14, 16]),
            (0, &[1_000_000]),
            (i64::MAX - 10, &[i64::MAX - 1]),
        ];
        for (w, done) in cases {
            let text = encode(*w, done, 4096).unwrap().unwrap();
            assert!(text.starts_with("kk1:"), "{text}");
            assert_eq!(decode(*w, &text).unwrap().unwrap(), done.to_vec(), "{text}");
        }
        assert_eq!(encode(7, &[], 4096).unwrap(), None);
    }

    #[test]
    fn the_shorter_encoding_wins() {
        let sparse = encode(0, &[1, 500_000, 900_000], 4096).unwrap().unwrap();
        assert!(sparse.starts_with("kk1:0:r"), "{sparse}");
        let alternating: Vec<i64> = (1..200).step_by(2).collect();
        let dense = encode(0, &alternating, 4096).unwrap().unwrap();
        assert!(dense.starts_with("kk1:0:b"), "{dense}");
    }

    #[test]
    fn foreign_metadata_is_ignored() {
        for m in ["", "hello", "{\"app\":1}", "kk2:0:b"] {
            assert_eq!(decode(0, m).unwrap(), None, "{m}");
        }
    }

    #[test]
    fn stale_and_corrupt_maps_are_errors() {
        let text = encode(10, &[12], 4096).unwrap().unwrap();
        assert_eq!(
            decode(11, &text),
            Err(OffsetMapError::Stale {
                base: 10,
                committed: 11
            })
        );
        for bad in [
            "kk1:",
            "kk1:x:b",
            "kk1:0:",
            "kk1:0:q",
            "kk1:0:b***",
            "kk1:0:r_w",
            "kk1:0:r____________w",
        ] {
            assert!(
                matches!(decode(0, bad), Err(OffsetMapError::Corrupt { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn too_large_maps_are_refused() {
        // Every third offset over 20k: 2.5 KB of bitset (3.3 KB in base64), far more as runs;
        // 4096 holds it, 1000 does not, and neither does 4096 for twice the span.
        let done: Vec<i64> = (1..20_000).step_by(3).collect();
        assert!(encode(0, &done, 4096).unwrap().is_some());
        let err = encode(0, &done, 1000).unwrap_err();
        assert_eq!(err.max_len, 1000);
        assert!(err.needed > 1000);
        let wider: Vec<i64> = (1..40_000).step_by(3).collect();
        assert!(encode(0, &wider, 4096).is_err());
    }

    #[test]
    fn hostile_run_lengths_are_bounded() {
        let mut data = Vec::new();
        push_varint(&mut data, 0);
        push_varint(&mut data, u64::MAX / 2);
        let text = format!("kk1:0:r{}", URL_SAFE_NO_PAD.encode(data));
        assert!(matches!(
            decode(0, &text),
            Err(OffsetMapError::Corrupt { .. })
        ));
    }

    proptest! {
        #[test]
        fn round_trips(w in 0i64..1_000_000, deltas in proptest::collection::btree_set(1i64..100_000, 0..400)) {
            let done: Vec<i64> = deltas.iter().map(|d| w + d).collect();
            match encode(w, &done, 4096) {
                Ok(None) => prop_assert!(done.is_empty()),
                Ok(Some(text)) => {
                    prop_assert!(text.len() <= 4096);
                    prop_assert_eq!(decode(w, &text).unwrap().unwrap(), done);
                }
                Err(e) => prop_assert!(e.needed > 4096),
            }
        }

        #[test]
        fn decoding_never_panics(s in "kk1:[0-9]{0,3}:[brx][A-Za-z0-9_-]{0,40}") {
            let _ = decode(0, &s);
        }
    }
}
