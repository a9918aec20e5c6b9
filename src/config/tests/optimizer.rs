//! `training.optimizer` and the Muon keys: values, ranges, and Muon keys under AdamW.

use super::*;

#[test]
fn the_optimizer_is_adamw_unless_muon_is_named() {
    assert_eq!(Config::default().training.optimizer, Optimizer::AdamW);
    let muon = load(r#"{"training": {"optimizer": "muon", "muon_lr": 0.05, "ns_steps": 3}}"#);
    assert_eq!(muon.training.optimizer, Optimizer::Muon);
    assert_eq!((muon.training.muon_lr, muon.training.ns_steps), (0.05, 3));
    assert_eq!(
        problem(r#"{"training": {"optimizer": "sgd"}}"#),
        "`training.optimizer` must be one of \"adamw\", \"muon\", got \"sgd\""
    );
}

#[test]
fn muon_ranges() {
    let cases = [
        (
            r#"{"training": {"optimizer": "muon", "muon_lr": 0}}"#,
            "`training.muon_lr` must be a number > 0, got 0",
        ),
        (
            r#"{"training": {"optimizer": "muon", "muon_momentum": 1.0}}"#,
            "`training.muon_momentum` must be in [0, 1), got 1",
        ),
        (
            r#"{"training": {"optimizer": "muon", "muon_momentum": -0.1}}"#,
            "`training.muon_momentum` must be in [0, 1), got -0.1",
        ),
        (
            r#"{"training": {"optimizer": "muon", "ns_steps": 0}}"#,
            "`training.ns_steps` must be a positive integer, got 0",
        ),
        (
            r#"{"training": {"optimizer": "muon", "momentum_warmup_steps": -1}}"#,
            "`training.momentum_warmup_steps` must be a non-negative integer, got -1",
        ),
    ];
    for (json, message) in cases {
        assert_eq!(problem(json), message, "for {json}");
    }
    // A warmup longer than the run is allowed: the momentum does not reach its target.
    let long = load(r#"{"training": {"optimizer": "muon", "momentum_warmup_steps": 1000}}"#);
    assert_eq!(long.training.momentum_warmup_steps, 1000);
}

#[test]
fn muon_keys_away_from_their_defaults_are_errors_under_adamw() {
    for (key, value) in [
        ("muon_lr", "0.05"),
        ("muon_momentum", "0.9"),
        ("momentum_warmup_steps", "10"),
        ("ns_steps", "6"),
    ] {
        let json = format!(r#"{{"training": {{"{key}": {value}}}}}"#);
        assert_eq!(
            problem(&json),
            format!(
                "`training.{key}` = {value} contradicts `training.optimizer` = \"adamw\": this key \
                 only applies to the Muon optimiser; set training.optimizer to \"muon\", or leave \
                 the key at its default"
            ),
            "for {json}"
        );
    }
    // Their defaults, written out (as configs/default.json does), are fine.
    load(
        r#"{"training": {"muon_lr": 0.02, "muon_momentum": 0.95, "momentum_warmup_steps": 100, "ns_steps": 5}}"#,
    );
}

#[test]
fn a_muon_run_needs_the_muon_feature() {
    let muon = load(r#"{"training": {"optimizer": "muon"}}"#);
    let settings = muon.unsupported(Features::all().without(Feature::Muon));
    assert_eq!(settings.len(), 1);
    assert_eq!(
        settings[0].to_string(),
        "`training.optimizer` = \"muon\" needs the Muon optimiser, which this build of vishwam \
         does not implement yet; use \"adamw\""
    );
    assert!(muon.unsupported(Features::all()).is_empty());
    assert!(Config::default()
        .unsupported(Features::NONE.with(Feature::CompileCache))
        .is_empty());
}
