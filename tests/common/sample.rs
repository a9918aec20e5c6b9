//! Checking the sample that `vishwam train` and `vishwam distill` print after a run.

use std::path::Path;

/// Asserts that `line`, the `sample (top-p 0.9, T 0.8, seed S): PROMPT|CONTINUATION` line a
/// run printed, is seeded nucleus sampling from the run's final weights, not a greedy loop
/// under a sampling header: `vishwam generate --checkpoint RUN` with the sample's settings
/// (40 new tokens at most, top-p 0.9, temperature 0.8, seed S) continues PROMPT with exactly
/// CONTINUATION, and greedy decoding of the same prompt continues it otherwise. Exact equality
/// is legitimate: both are the one-device `LoadedModel` program over the same weights on the
/// same machine with the same seed.
pub fn assert_sample_is_nucleus_sampling(home: &Path, run: &Path, line: &str) {
    let (seed, rest) = line
        .strip_prefix("sample (top-p 0.9, T 0.8, seed ")
        .and_then(|rest| rest.split_once("): "))
        .unwrap_or_else(|| panic!("not a nucleus-sample line: {line}"));
    let (prompt, continuation) = rest
        .split_once('|')
        .unwrap_or_else(|| panic!("no `|` after the prompt: {line}"));
    let run = run.to_string_lossy();
    let generate = |extra: &[&str]| {
        let mut args = vec![
            "generate",
            "--checkpoint",
            &run,
            "--prompt",
            prompt,
            "--max_length",
            "40",
            "--min_length",
            "0",
        ];
        args.extend_from_slice(extra);
        let out = super::succeeded(super::vishwam_cli(home, &args));
        out.strip_suffix('\n').unwrap_or(&out).to_string()
    };
    let nucleus = generate(&["--top_p", "0.9", "--temperature", "0.8", "--seed", seed]);
    assert_eq!(nucleus, format!("{prompt}{continuation}"), "{line}");
    let greedy = generate(&["--greedy"]);
    assert_ne!(
        greedy, nucleus,
        "greedy decoding gives the sample too: {line}"
    );
}
