//! Comparing two greedy decoders up to a near-tie of two candidates.

/// How close (as a fraction of the row's logit range) two candidates' logits must be for two
/// greedy decoders to pick either. Two programs that compute the same f32 logits in another
/// order (the KV cache against a recomputed window, a sampling step against an argmax step)
/// agree to about 1e-6 of the range; XLA picks vector widths, FMA and reduction orders per
/// CPU, so which of two candidates that close wins is the CPU's choice, not the program's.
/// 1e-4 is 100 times that agreement, and a decoder that is wrong (a position, a mask, a cache
/// slot off by one) moves the logits by a sizeable part of the range, far past it.
pub const GREEDY_TIE: f32 = 1e-4;

/// Asserts that `got`, the greedy continuation of `prompt` by the program under test, equals
/// `want`, the continuation by another, up to a near-tie: where they first part,
/// `logits_after(prefix)` (the next-token logits after the common prefix `prompt + want[..i]`,
/// as the caller computes them: the callers use the program under test's own logits) must
/// rate the two choices within [`GREEDY_TIE`] of its range; the rest is then not compared
/// (the contexts differ).
pub fn assert_same_greedy(
    what: &str,
    prompt: &[i32],
    got: &[i32],
    want: &[i32],
    logits_after: impl FnOnce(&[i32]) -> Vec<f32>,
) {
    let Some(i) = got.iter().zip(want).position(|(g, w)| g != w) else {
        assert_eq!(got.len(), want.len(), "{what}: {got:?} vs {want:?}");
        return;
    };
    let prefix: Vec<i32> = prompt.iter().chain(&want[..i]).copied().collect();
    let logits = logits_after(&prefix);
    let range = logits.iter().copied().fold(f32::MIN, f32::max)
        - logits.iter().copied().fold(f32::MAX, f32::min);
    let (a, b) = (logits[got[i] as usize], logits[want[i] as usize]);
    assert!(
        (a - b).abs() <= GREEDY_TIE * range,
        "{what}: token {i} is {} against {} (logits {a} vs {b}, range {range}): not a near-tie; {got:?} vs {want:?}",
        got[i],
        want[i]
    );
    println!(
        "{what}: token {i} is a near-tie ({} vs {}, logits {a} vs {b}); compared up to it",
        got[i], want[i]
    );
}
