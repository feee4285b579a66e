//! The offset map: which records above a committed watermark are already processed, kept in the
//! commit's metadata string so the next owner of the partition skips them.
//!
//! With key-ordered or unordered dispatch, records finish out of order. The commit names the
//! contiguous watermark `W` (the lowest offset not yet processed), and records above it that had
//! finished would be delivered again after a restart or rebalance. The map avoids that, as the
//! Confluent Parallel Consumer does.
//!
//! # Format
//!
//! The metadata is ASCII text:
//!
//! ```text
//! kk1:<W>:<kind><data>
//! ```
//!
//! - `kk1:` (4 bytes) marks kafkit's version-1 map. Metadata that does not start with it (written
//!   by users or other clients, or empty) is not ours: [`decode`] returns `Ok(None)`, never an
//!   error. A future format takes a new tag (`kk2:`), which this version ignores.
//! - `<W>` is the watermark in canonical decimal (no sign for non-negative values, no leading
//!   zeros), then `:`. It must equal the offset the map was committed with; a map whose base
//!   differs is stale (a later commit without a map moved the offset) and is refused.
//! - `<kind>` is one byte, `b` or `r`, choosing how `<data>` reads.
//! - `<data>` is URL-safe base64 without padding (`A-Z a-z 0-9 - _`) of a byte string. Bit and run
//!   positions count from `W + 1`; `W` itself is never done, or the watermark would be higher.
//!   - `b`, bitset: bit `i` (byte `i / 8`, bit `i % 8`, least significant first) is set when
//!     offset `W + 1 + i` is done. The last byte holds the highest done offset. Costs one bit per
//!     offset of span, whatever the pattern.
//!   - `r`, runs: unsigned LEB128 varints (7 bits a byte, least significant group first, high bit
//!     set on every byte but the last, at most 10 bytes), the lengths of alternating runs
//!     starting at `W + 1`: first "not done" (possibly 0), then "done", then "not done", and so
//!     on. Costs one to three bytes per run, whatever the span.
//!
//! Example: `W = 100`, done `{101, 102, 103, 110}`:
//! bitset bytes `0x07 0x02` (`kk1:100:bBwI`); runs `0, 3, 6, 1` (`kk1:100:rAAMGAQ`). The bitset
//! is shorter, so it is written.
//!
//! # Why two encodings
//!
//! Neither is small for every set. A bitset over a span of `n` offsets is `n / 8` bytes: compact
//! when most records in the window are in flight with done and pending interleaved (alternating
//! bits cost 1/8 byte an offset, runs a full byte), but 125 KB for a lone record finished a
//! million offsets ahead. Runs cost per change between done and not done: a few bytes for long
//! stretches or far-apart offsets, eight times a bitset for interleaved ones. [`encode`] writes
//! whichever is shorter (the bitset on a tie).
//!
//! # Limits
//!
//! The broker refuses metadata longer than `offset.metadata.max.bytes` (4096 bytes by default), so
//! [`encode`] takes a byte limit and returns [`OffsetMapTooLarge`] rather than dropping or
//! truncating the map; the caller applies backpressure (stops dispatching far past the watermark)
//! or commits the watermark alone. A map spans at most [`MAX_SPAN`] offsets above `W`: that bounds
//! what [`decode`] allocates for corrupt or hostile input (at most `MAX_SPAN` offsets, 80 MB), and
//! the encoder refuses wider sets so that everything it writes decodes.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// The prefix of every kafkit offset map, version 1.
const TAG: &str = "kk1:";

/// The most offsets above the watermark a map may span: done offsets lie in
/// `(W, W + MAX_SPAN]`. Bounds what decoding corrupt or hostile metadata can allocate.
const MAX_SPAN: u64 = 10_000_000;

/// The longest LEB128 varint of a `u64`.
const MAX_VARINT_LEN: usize = 10;

/// An offset map that cannot be written within the limits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum OffsetMapTooLarge {
    /// The shorter encoding needs more bytes than the broker accepts.
    #[error(
        "the offset map needs {needed} bytes, more than the {max_len} allowed \
         (offset.metadata.max.bytes); let fewer records run ahead of the watermark"
    )]
    Bytes {
        /// Length of the shorter encoding, tag and base included.
        needed: usize,
        /// The limit passed to [`encode`].
        max_len: usize,
    },
    /// The done offsets reach further above the watermark than a map may span.
    #[error(
        "the offset map would span {span} offsets above the watermark, more than the {max_span} \
         a map may cover; let fewer records run ahead of the watermark"
    )]
    Span {
        /// Highest done offset minus the watermark.
        span: u64,
        /// [`MAX_SPAN`].
        max_span: u64,
    },
}

/// Kafkit-tagged metadata that cannot be used; the caller skips nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum OffsetMapError {
    /// The map was written for another offset than the one committed with it.
    #[error(
        "offset map is for offset {base}, but the committed offset is {committed}; ignoring it"
    )]
    Stale {
        /// The base offset written in the map.
        base: i64,
        /// The committed offset the map came with.
        committed: i64,
    },
    /// The text after the tag is not a valid version-1 map.
    #[error("corrupt offset map: {reason}")]
    Corrupt {
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// How many offsets above the watermark a map may cover and still always fit in `max_len` bytes
/// (as a bitset, the larger of the two encodings in the worst case, with the longest base offset).
/// The consumer keeps processing within this distance of the watermark, so maps never need dropping.
pub(crate) fn max_span(max_len: usize) -> i64 {
    // "kk1:" + up to 20 characters of base + ":" + kind = 26 bytes; base64 turns 3 bytes into 4.
    let data_bytes = max_len.saturating_sub(26) * 3 / 4;
    (data_bytes as u64 * 8).min(MAX_SPAN) as i64
}

/// Encodes the done offsets above `watermark` as commit metadata of at most `max_len` bytes.
///
/// `done_above` must be sorted ascending, without duplicates, every offset greater than
/// `watermark`. Returns `Ok(None)` when it is empty: commit without metadata.
///
/// # Errors
///
/// [`OffsetMapTooLarge::Bytes`] when even the shorter encoding is longer than `max_len`, and
/// [`OffsetMapTooLarge::Span`] when the highest offset is more than [`MAX_SPAN`] above
/// `watermark`.
///
/// # Panics
///
/// When `done_above` is not sorted, has duplicates or holds an offset not above `watermark`. A map
/// built from such input could make the next owner skip records nobody processed.
pub(crate) fn encode(
    watermark: i64,
    done_above: &[i64],
    max_len: usize,
) -> Result<Option<String>, OffsetMapTooLarge> {
    let (Some(&lowest), Some(&highest)) = (done_above.first(), done_above.last()) else {
        return Ok(None);
    };
    assert!(
        lowest > watermark,
        "offset map: done offset {lowest} is not above the watermark {watermark}"
    );
    assert!(
        done_above.windows(2).all(|w| w[0] < w[1]),
        "offset map: done offsets must be sorted and distinct"
    );
    // `highest > watermark`, so the difference is positive and fits a u64 whatever the values.
    let span = highest.abs_diff(watermark);
    if span > MAX_SPAN {
        return Err(OffsetMapTooLarge::Span {
            span,
            max_span: MAX_SPAN,
        });
    }
    // Every offset is now within MAX_SPAN above the watermark: the deltas below cannot overflow.
    let delta = |offset: i64| offset.abs_diff(watermark);

    let mut runs = Vec::new();
    let mut next = 1u64;
    for run in done_above.chunk_by(|a, b| b - a == 1) {
        let (first, last) = (delta(run[0]), delta(run[run.len() - 1]));
        push_varint(&mut runs, first - next);
        push_varint(&mut runs, last - first + 1);
        next = last + 1;
    }
    // span <= MAX_SPAN, so the bitset length fits a usize on every platform.
    let bitset_len = span.div_ceil(8) as usize;

    let head = format!("{TAG}{watermark}:");
    let use_runs = runs.len() < bitset_len;
    let data_len = if use_runs { runs.len() } else { bitset_len };
    let needed = base64::encoded_len(data_len, false)
        .and_then(|n| n.checked_add(head.len() + 1))
        .unwrap_or(usize::MAX);
    if needed > max_len {
        return Err(OffsetMapTooLarge::Bytes { needed, max_len });
    }

    let (kind, data) = if use_runs {
        ('r', runs)
    } else {
        let mut bits = vec![0u8; bitset_len];
        for &offset in done_above {
            let i = (delta(offset) - 1) as usize;
            bits[i / 8] |= 1 << (i % 8);
        }
        ('b', bits)
    };
    let mut text = head;
    text.push(kind);
    URL_SAFE_NO_PAD.encode_string(data, &mut text);
    debug_assert_eq!(text.len(), needed);
    Ok(Some(text))
}

/// The done offsets recorded in `metadata`, committed together with `committed_offset`: sorted
/// ascending, all above `committed_offset`.
///
/// Returns `Ok(None)` when the metadata is not a kafkit map (empty, or written by someone else).
///
/// # Errors
///
/// [`OffsetMapError::Stale`] when the map's base is not `committed_offset`, and
/// [`OffsetMapError::Corrupt`] when the text after the tag is malformed, records no offset, spans
/// more than [`MAX_SPAN`] offsets or reaches past `i64::MAX`. Either way the caller skips nothing.
pub(crate) fn decode(
    committed_offset: i64,
    metadata: &str,
) -> Result<Option<Vec<i64>>, OffsetMapError> {
    let Some(rest) = metadata.strip_prefix(TAG) else {
        return Ok(None);
    };
    let corrupt = |reason| OffsetMapError::Corrupt { reason };
    let (base_text, body) = rest
        .split_once(':')
        .ok_or(corrupt("no ':' after the base offset"))?;
    let base: i64 = base_text
        .parse()
        .ok()
        .filter(|b: &i64| b.to_string() == base_text)
        .ok_or(corrupt("the base offset is not a canonical decimal i64"))?;
    if base != committed_offset {
        return Err(OffsetMapError::Stale {
            base,
            committed: committed_offset,
        });
    }
    let (runs, data) = if let Some(d) = body.strip_prefix('r') {
        (true, d)
    } else if let Some(d) = body.strip_prefix('b') {
        (false, d)
    } else {
        return Err(corrupt("unknown encoding kind"));
    };
    let bytes = URL_SAFE_NO_PAD
        .decode(data)
        .map_err(|_| corrupt("data is not unpadded URL-safe base64"))?;
    let done = if runs {
        decode_runs(base, &bytes)?
    } else {
        decode_bitset(base, &bytes)?
    };
    if done.is_empty() {
        return Err(corrupt("the map records no done offset"));
    }
    Ok(Some(done))
}

/// The offsets a bitset marks done above `base`.
fn decode_bitset(base: i64, bytes: &[u8]) -> Result<Vec<i64>, OffsetMapError> {
    let corrupt = |reason| OffsetMapError::Corrupt { reason };
    let highest_bit = bytes.iter().rposition(|&b| b != 0).map_or(0, |i| {
        i as u64 * 8 + u64::from(8 - bytes[i].leading_zeros())
    });
    if highest_bit > MAX_SPAN {
        return Err(corrupt("the bitset spans more offsets than a map may"));
    }
    offset_at(base, highest_bit).ok_or(corrupt("an offset is past i64::MAX"))?;
    let count = bytes.iter().map(|b| b.count_ones() as usize).sum();
    let mut out = Vec::with_capacity(count);
    for (i, &byte) in bytes.iter().enumerate() {
        for bit in 0..8 {
            if byte & (1 << bit) != 0 {
                // Checked above: the highest set bit is within MAX_SPAN and base + it fits.
                out.push(base + (i * 8 + bit + 1) as i64);
            }
        }
    }
    Ok(out)
}

/// The offsets alternating run lengths mark done above `base`.
fn decode_runs(base: i64, bytes: &[u8]) -> Result<Vec<i64>, OffsetMapError> {
    let corrupt = |reason| OffsetMapError::Corrupt { reason };
    let mut out = Vec::new();
    let mut pos = 0;
    let mut cursor = 1u64;
    let mut done = false;
    while pos < bytes.len() {
        let len =
            read_varint(bytes, &mut pos).ok_or(corrupt("a run length is not a valid varint"))?;
        let end = cursor
            .checked_add(len)
            .filter(|&e| e <= MAX_SPAN + 1)
            .ok_or(corrupt("the runs span more offsets than a map may"))?;
        if done && end > cursor {
            offset_at(base, end - 1).ok_or(corrupt("an offset is past i64::MAX"))?;
            // Checked just above: base + (end - 1) fits, and end - 1 <= MAX_SPAN.
            out.extend((cursor..end).map(|d| base + d as i64));
        }
        cursor = end;
        done = !done;
    }
    Ok(out)
}

/// `base + delta`, or `None` past `i64::MAX`.
fn offset_at(base: i64, delta: u64) -> Option<i64> {
    base.checked_add(i64::try_from(delta).ok()?)
}

/// Appends `v` as an unsigned LEB128 varint.
fn push_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Reads an unsigned LEB128 varint at `*pos` and moves past it; `None` when truncated, longer
/// than ten bytes or above `u64::MAX`.
fn read_varint(data: &[u8], pos: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for i in 0..MAX_VARINT_LEN {
        let b = *data.get(*pos)?;
        *pos += 1;
        let group = u64::from(b & 0x7f);
        // The tenth byte holds bit 63 only.
        if i == MAX_VARINT_LEN - 1 && group > 1 {
            return None;
        }
        v |= group << (7 * i);
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

    /// Default `offset.metadata.max.bytes`.
    const BROKER_LIMIT: usize = 4096;

    /// A deterministic pseudo-random sequence (SplitMix64), so size tests are reproducible.
    fn splitmix(seed: &mut u64) -> u64 {
        *seed = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = *seed;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// `count` distinct offsets drawn from `(w, w + span]`, sorted.
    fn random_set(w: i64, span: u64, count: usize, seed: u64) -> Vec<i64> {
        let mut seed = seed;
        let mut set = std::collections::BTreeSet::new();
        while set.len() < count {
            set.insert(w + 1 + (splitmix(&mut seed) % span) as i64);
        }
        set.into_iter().collect()
    }

    fn base64_map(base: i64, kind: char, bytes: &[u8]) -> String {
        format!("{TAG}{base}:{kind}{}", URL_SAFE_NO_PAD.encode(bytes))
    }

    fn ten_runs_of_500() -> Vec<i64> {
        (0..10)
            .flat_map(|r| r * 1000 + 1..=r * 1000 + 500)
            .collect()
    }

    #[test]
    fn round_trips_and_picks_the_shorter_encoding() {
        let alternating: Vec<i64> = (1..2000).step_by(2).collect();
        let sparse: Vec<i64> = (1..=64).map(|i| i * 15_625).collect();
        let cases: &[(&str, i64, Vec<i64>, char)] = &[
            ("single next offset", 0, vec![1], 'b'),
            ("single far offset", 0, vec![1_000_000], 'r'),
            ("dense run", 100, (101..=5000).collect(), 'r'),
            ("ten runs of 500", 0, ten_runs_of_500(), 'r'),
            ("sparse far apart", 0, sparse, 'r'),
            ("alternating", 0, alternating, 'b'),
            (
                "half of 2000 at random",
                7,
                random_set(7, 2000, 1000, 1),
                'b',
            ),
            ("large watermark", 1 << 40, vec![(1 << 40) + 3], 'b'),
            (
                "near i64::MAX",
                i64::MAX - 10,
                vec![i64::MAX - 1, i64::MAX],
                'b',
            ),
            ("at the span limit", 5, vec![6, 5 + MAX_SPAN as i64], 'r'),
        ];
        for (name, w, done, kind) in cases {
            let text = encode(*w, done, BROKER_LIMIT).unwrap().unwrap();
            let head = format!("kk1:{w}:{kind}");
            assert!(text.starts_with(&head), "{name}: {text}");
            assert!(text.is_ascii(), "{name}");
            assert_eq!(decode(*w, &text), Ok(Some(done.clone())), "{name}: {text}");
        }
    }

    #[test]
    fn a_full_span_always_fits() {
        for max_len in [100, 1000, 4096, 65536] {
            let span = max_span(max_len);
            // The worst case for size: every other offset done across the whole span, at the largest base.
            let done: Vec<i64> = (1..span).step_by(2).map(|d| i64::MAX - span + d).collect();
            let text = encode(i64::MAX - span, &done, max_len).unwrap().unwrap();
            assert!(text.len() <= max_len, "{max_len}: {}", text.len());
        }
    }

    #[test]
    fn the_documented_example_holds() {
        assert_eq!(
            encode(100, &[101, 102, 103, 110], BROKER_LIMIT),
            Ok(Some("kk1:100:bBwI".to_owned()))
        );
        assert_eq!(
            decode(100, "kk1:100:rAAMGAQ"),
            Ok(Some(vec![101, 102, 103, 110]))
        );
    }

    #[test]
    fn nothing_above_the_watermark_means_no_metadata() {
        assert_eq!(encode(7, &[], BROKER_LIMIT), Ok(None));
        assert_eq!(encode(7, &[], 0), Ok(None));
    }

    #[test]
    fn representative_sets_stay_small() {
        let sparse: Vec<i64> = random_set(0, 1_000_000, 64, 3);
        let cases: &[(&str, Vec<i64>, usize)] = &[
            (
                "1000 done of 2000 at random",
                random_set(0, 2000, 1000, 2),
                344,
            ),
            ("10 runs of 500", ten_runs_of_500(), 60),
            ("64 sparse across 1M", sparse, 300),
            ("every other of 20k", (1..20_000).step_by(2).collect(), 3344),
        ];
        for (name, done, at_most) in cases {
            let text = encode(0, done, BROKER_LIMIT).unwrap().unwrap();
            assert!(text.len() <= *at_most, "{name}: {} bytes", text.len());
        }
    }

    #[test]
    fn foreign_metadata_is_not_ours() {
        for m in [
            "",
            "hello",
            r#"{"app":"billing","v":1}"#,
            "kk2:0:bAQ",
            "KK1:0:bAQ",
            " kk1:0:bAQ",
            "kk1",
        ] {
            assert_eq!(decode(0, m), Ok(None), "{m:?}");
        }
    }

    #[test]
    fn a_map_for_another_offset_is_stale() {
        let text = encode(10, &[12], BROKER_LIMIT).unwrap().unwrap();
        for committed in [9, 11, 0, -1] {
            assert_eq!(
                decode(committed, &text),
                Err(OffsetMapError::Stale {
                    base: 10,
                    committed
                })
            );
        }
    }

    #[test]
    fn corrupt_maps_are_errors() {
        let eleven_byte_varint = [0x80u8; 10].iter().copied().chain([0]).collect::<Vec<_>>();
        let overflowing_varint = [0xffu8; 9]
            .iter()
            .copied()
            .chain([0x02])
            .collect::<Vec<_>>();
        let cases: &[(&str, String)] = &[
            ("tag only", "kk1:".into()),
            ("no base separator", "kk1:0".into()),
            ("base not a number", "kk1:x:bAQ".into()),
            ("base with a plus", "kk1:+0:bAQ".into()),
            ("base with leading zero", "kk1:00:bAQ".into()),
            ("base past i64", "kk1:9223372036854775808:bAQ".into()),
            ("no kind", "kk1:0:".into()),
            ("unknown kind", "kk1:0:qAQ".into()),
            ("multibyte kind", "kk1:0:éAQ".into()),
            ("bad base64", "kk1:0:b***".into()),
            ("padded base64", "kk1:0:bAQ==".into()),
            ("standard base64 alphabet", "kk1:0:b+/8".into()),
            ("impossible base64 length", "kk1:0:bAQID_".into()),
            ("empty bitset", "kk1:0:b".into()),
            ("all-zero bitset", base64_map(0, 'b', &[0, 0])),
            ("empty runs", "kk1:0:r".into()),
            ("only a gap", base64_map(0, 'r', &[5])),
            ("empty done run", base64_map(0, 'r', &[5, 0])),
            ("truncated varint", base64_map(0, 'r', &[0, 0x80])),
            (
                "varint over ten bytes",
                base64_map(0, 'r', &eleven_byte_varint),
            ),
            (
                "varint above u64::MAX",
                base64_map(0, 'r', &overflowing_varint),
            ),
            ("huge done run", {
                let mut d = vec![0];
                push_varint(&mut d, u64::MAX / 2);
                base64_map(0, 'r', &d)
            }),
            ("runs past the span limit", {
                let mut d = Vec::new();
                push_varint(&mut d, MAX_SPAN);
                push_varint(&mut d, 1);
                base64_map(0, 'r', &d)
            }),
            ("bitset past the span limit", {
                let mut d = vec![0u8; MAX_SPAN as usize / 8];
                d.push(1);
                base64_map(0, 'b', &d)
            }),
            ("runs past i64::MAX", base64_map(i64::MAX - 1, 'r', &[1, 1])),
            (
                "bitset past i64::MAX",
                base64_map(i64::MAX - 1, 'b', &[0b10]),
            ),
        ];
        for (name, text) in cases {
            let base = text[TAG.len()..].split(':').next().unwrap();
            let committed = base.parse().unwrap_or(0);
            assert!(
                matches!(decode(committed, text), Err(OffsetMapError::Corrupt { .. })),
                "{name}: {text} -> {:?}",
                decode(committed, text)
            );
        }
    }

    #[test]
    fn the_span_limit_is_inclusive_when_decoding() {
        let mut d = Vec::new();
        push_varint(&mut d, MAX_SPAN - 1);
        push_varint(&mut d, 1);
        let text = base64_map(0, 'r', &d);
        assert_eq!(decode(0, &text), Ok(Some(vec![MAX_SPAN as i64])));
        assert_eq!(
            decode(i64::MAX - 1, &base64_map(i64::MAX - 1, 'r', &[0, 1])),
            Ok(Some(vec![i64::MAX]))
        );
    }

    #[test]
    fn maps_over_the_byte_limit_are_refused() {
        // Every other offset over 12k: the 1.5 KB bitset is 2 KB of base64 and runs are eight
        // times bigger; fits 4096. Over 40k the bitset alone is 6.7 KB of base64: refused.
        let fits: Vec<i64> = (1..12_000).step_by(2).collect();
        let text = encode(0, &fits, BROKER_LIMIT).unwrap().unwrap();
        assert!(text.len() <= BROKER_LIMIT);
        let wide: Vec<i64> = (1..40_000).step_by(2).collect();
        let Err(OffsetMapTooLarge::Bytes { needed, max_len }) = encode(0, &wide, BROKER_LIMIT)
        else {
            panic!("a 40k alternating set fits 4096 bytes");
        };
        assert_eq!(max_len, BROKER_LIMIT);
        assert!(needed > BROKER_LIMIT, "{needed}");
        // `needed` is exact: that many bytes suffice, one fewer does not.
        assert_eq!(encode(0, &wide, needed).unwrap().unwrap().len(), needed);
        assert_eq!(
            encode(0, &wide, needed - 1),
            Err(OffsetMapTooLarge::Bytes {
                needed,
                max_len: needed - 1
            })
        );
    }

    #[test]
    fn sets_wider_than_the_span_limit_are_refused() {
        let far = 3 + MAX_SPAN as i64 + 1;
        assert_eq!(
            encode(3, &[4, far], BROKER_LIMIT),
            Err(OffsetMapTooLarge::Span {
                span: MAX_SPAN + 1,
                max_span: MAX_SPAN
            })
        );
        assert!(matches!(
            encode(i64::MIN, &[i64::MAX], BROKER_LIMIT),
            Err(OffsetMapTooLarge::Span { span: u64::MAX, .. })
        ));
    }

    #[test]
    #[should_panic(expected = "not above the watermark")]
    fn offsets_at_the_watermark_are_a_caller_bug() {
        let _ = encode(5, &[5, 6], BROKER_LIMIT);
    }

    #[test]
    #[should_panic(expected = "sorted and distinct")]
    fn unsorted_offsets_are_a_caller_bug() {
        let _ = encode(0, &[3, 2], BROKER_LIMIT);
    }

    /// A sorted set within `(w, w + 100_000]`, either sparse (a few hundred offsets anywhere) or
    /// dense (each offset of a random span done with a random probability).
    fn done_sets() -> impl Strategy<Value = (i64, Vec<i64>)> {
        let watermark = prop_oneof![0i64..1_000_000, Just(i64::MAX - 100_000), Just(-1i64)];
        let sparse = proptest::collection::btree_set(1i64..=100_000, 0..400)
            .prop_map(|s| s.into_iter().collect::<Vec<_>>());
        let dense = (1usize..=100_000, 0.0f64..=1.0).prop_flat_map(|(span, p)| {
            proptest::collection::vec(proptest::bool::weighted(p), span).prop_map(|bits| {
                (1i64..)
                    .zip(bits)
                    .filter_map(|(d, done)| done.then_some(d))
                    .collect::<Vec<_>>()
            })
        });
        (watermark, prop_oneof![sparse, dense])
            .prop_map(|(w, deltas)| (w, deltas.into_iter().map(|d| w + d).collect()))
    }

    proptest! {
        #[test]
        fn round_trips((w, done) in done_sets()) {
            match encode(w, &done, usize::MAX) {
                Ok(None) => prop_assert!(done.is_empty()),
                Ok(Some(text)) => prop_assert_eq!(decode(w, &text), Ok(Some(done))),
                Err(e) => prop_assert!(false, "unbounded encode failed: {}", e),
            }
        }

        #[test]
        fn never_longer_than_max_len((w, done) in done_sets(), max_len in 0usize..6000) {
            match encode(w, &done, max_len) {
                Ok(None) => prop_assert!(done.is_empty()),
                Ok(Some(text)) => {
                    prop_assert!(text.len() <= max_len);
                    prop_assert_eq!(decode(w, &text), Ok(Some(done)));
                }
                Err(OffsetMapTooLarge::Bytes { needed, max_len: m }) => {
                    prop_assert_eq!(m, max_len);
                    prop_assert!(needed > max_len);
                    let text = encode(w, &done, needed).unwrap().unwrap();
                    prop_assert_eq!(text.len(), needed);
                }
                Err(e) => prop_assert!(false, "unexpected {}", e),
            }
        }

        #[test]
        fn decoding_arbitrary_text_never_panics(rest in any::<String>(), committed in any::<i64>()) {
            let _ = decode(committed, &format!("{TAG}{rest}"));
            let _ = decode(0, &format!("{TAG}0:{rest}"));
            let _ = decode(0, &format!("{TAG}0:b{rest}"));
            let _ = decode(0, &format!("{TAG}0:r{rest}"));
        }

        #[test]
        fn decoding_arbitrary_bytes_never_panics(
            base in prop_oneof![Just(0i64), Just(i64::MAX - 3), any::<i64>()],
            runs in any::<bool>(),
            bytes in proptest::collection::vec(any::<u8>(), 0..48),
        ) {
            let text = base64_map(base, if runs { 'r' } else { 'b' }, &bytes);
            if let Ok(Some(done)) = decode(base, &text) {
                prop_assert!(!done.is_empty());
                prop_assert!(done[0] > base);
                prop_assert!(done.windows(2).all(|w| w[0] < w[1]));
                prop_assert!(done[done.len() - 1].abs_diff(base) <= MAX_SPAN);
            }
        }
    }
}
