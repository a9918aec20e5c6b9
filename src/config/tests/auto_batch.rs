//! `training.batch_size` "auto" and the keys of the automatic batch size.

use super::*;

#[test]
fn batch_size_is_a_number_or_auto() {
    let auto = load(r#"{"training": {"batch_size": "auto", "global_batch_size": 64}}"#);
    assert!(auto.training.batch_size_is_auto());
    assert_eq!(auto.training.global_batch_size, Some(64));
    // It is written back as "auto" and reads back the same.
    let text = auto.to_json_pretty();
    assert!(text.contains(r#""batch_size": "auto""#), "{text}");
    assert_eq!(Config::from_json_str(&text).unwrap(), auto);
    assert!(!load(r#"{"training": {"batch_size": 4}}"#)
        .training
        .batch_size_is_auto());
    for (value, got) in [("\"max\"", "\"max\""), ("0", "0"), ("2.5", "2.5")] {
        assert_eq!(
            problem(&format!(r#"{{"training": {{"batch_size": {value}}}}}"#)),
            format!("`training.batch_size` must be a positive integer or \"auto\", got {got}")
        );
    }
}

#[test]
fn the_auto_keys_need_batch_size_auto() {
    for (key, value) in [
        ("global_batch_size", "32"),
        ("memory_reserve", "0.2"),
        ("memory_gib", "4"),
    ] {
        let message = problem(&format!(r#"{{"training": {{"{key}": {value}}}}}"#));
        assert!(
            message.contains(&format!("training.{key}")) && message.contains("\"auto\""),
            "{message}"
        );
    }
    let message = problem(
        r#"{"training": {"batch_size": "auto", "global_batch_size": 32, "grad_accum_steps": 4}}"#,
    );
    assert!(message.contains("training.grad_accum_steps"), "{message}");
    assert_eq!(
        problem(r#"{"training": {"batch_size": "auto", "memory_reserve": 1.0}}"#),
        "`training.memory_reserve` must be in [0, 1), got 1"
    );
}
