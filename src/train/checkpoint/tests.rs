//! Unit tests of writing, reading and pruning checkpoints and of reading older manifests.

use super::*;

fn state() -> BTreeMap<String, HostArray> {
    let mut s = BTreeMap::new();
    s.insert(
        "params.w".into(),
        HostArray::from_slice(&[2, 3], &[1f32, 2., 3., 4., 5., 6.]).unwrap(),
    );
    s.insert("step".into(), HostArray::scalar(7i32));
    s.insert(
        "rng".into(),
        HostArray::from_slice(&[2], &[1u64, 2]).unwrap(),
    );
    s
}

#[test]
fn save_load_round_trip_and_pruning() {
    let root = tempfile::tempdir().unwrap();
    for step in [1, 2, 3] {
        save(
            root.path(),
            step,
            &state(),
            serde_json::json!({"a": 1}),
            serde_json::json!({"pos": step}),
            2,
        )
        .unwrap();
    }
    let steps: Vec<u64> = list(root.path()).into_iter().map(|(s, _)| s).collect();
    assert_eq!(steps, vec![2, 3]);
    let ck = load(&latest(root.path()).unwrap()).unwrap();
    assert_eq!(ck.manifest.step, 3);
    assert_eq!(ck.state, state());
    assert_eq!(ck.manifest.data_position, serde_json::json!({"pos": 3}));
}

#[test]
fn corruption_and_foreign_directories_are_refused() {
    let root = tempfile::tempdir().unwrap();
    let dir = save(
        root.path(),
        5,
        &state(),
        serde_json::json!({}),
        serde_json::json!(null),
        3,
    )
    .unwrap();
    let file = dir.join(STATE_FILE);
    let mut bytes = std::fs::read(&file).unwrap();
    let n = bytes.len();
    bytes[n - 1] ^= 1;
    std::fs::write(&file, bytes).unwrap();
    assert!(load(&dir).unwrap_err().to_string().contains("corrupt"));
    let empty = tempfile::tempdir().unwrap();
    assert!(load(empty.path())
        .unwrap_err()
        .to_string()
        .contains("is this a vishwam checkpoint"));
    let m = dir.join(MANIFEST_FILE);
    let text = std::fs::read_to_string(&m)
        .unwrap()
        .replace("\"version\": 1", "\"version\": 99");
    std::fs::write(&m, text).unwrap();
    assert!(load(&dir)
        .unwrap_err()
        .to_string()
        .contains("format version 99"));
}

#[test]
fn the_global_batch_is_recorded_and_older_manifests_still_load() {
    let root = tempfile::tempdir().unwrap();
    let batch = BatchGeometry {
        per_shard: 8,
        shards: 8,
        grad_accum_steps: 4,
    };
    let dir = save_with_batch(
        root.path(),
        1,
        &state(),
        serde_json::json!({}),
        serde_json::Value::Null,
        Some(batch),
        1,
    )
    .unwrap();
    let ck = load(&dir).unwrap();
    assert_eq!(
        (ck.manifest.global_batch, ck.manifest.batch),
        (Some(256), Some(batch))
    );
    // A manifest written before the batch was recorded has neither key.
    let path = dir.join(MANIFEST_FILE);
    let mut older: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let fields = older.as_object_mut().unwrap();
    fields.remove("global_batch");
    fields.remove("batch");
    std::fs::write(&path, older.to_string()).unwrap();
    let ck = load(&dir).unwrap();
    assert_eq!((ck.manifest.global_batch, ck.manifest.batch), (None, None));
    assert_eq!(ck.state, state());
}

/// The config part of a manifest written before batch_size became per shard.
fn older_config(memory: serde_json::Value, block_size: serde_json::Value) -> serde_json::Value {
    let mut config: serde_json::Value =
        serde_json::from_str(&crate::config::Config::default().to_json_pretty()).unwrap();
    config["training"]["batch_size"] = serde_json::json!(64);
    config["optimization"]["block_size"] = block_size;
    for (key, value) in memory.as_object().unwrap() {
        config["memory"][key] = value.clone();
    }
    config
}

#[test]
fn an_older_manifests_default_block_size_does_not_switch_blocked_attention_on() {
    use serde_json::json;
    let root = tempfile::tempdir().unwrap();
    // Written before the batch was recorded: block_size 128 was the default, and a cuDNN
    // backend beside it was valid.
    let mut config = older_config(
        json!({"attention_memory_efficient": null, "use_memory_efficient_attention": null,
               "attention_backend": "cudnn"}),
        json!(128),
    );
    config["optimization"]["mixed_precision"] = json!(true);
    let dir = save(root.path(), 3, &state(), config, json!(null), 1).unwrap();
    let ck = load(&dir).unwrap();
    assert_eq!(
        ck.manifest.config["optimization"]["block_size"],
        json!(null)
    );
    assert_eq!(ck.manifest.config["training"]["batch_size"], json!(64));
    let loaded = crate::config::Config::from_json_str(&ck.manifest.config.to_string()).unwrap();
    assert_eq!(loaded.attention_block(), None);
    // An explicit switch kept its block length, and so does a manifest with the batch.
    let on = older_config(json!({"attention_memory_efficient": true}), json!(128));
    let mut migrated = on.clone();
    migrate_older_config(&mut migrated);
    assert_eq!(migrated, on);
    let dir = save_with_batch(
        root.path(),
        4,
        &state(),
        older_config(json!({}), json!(128)),
        json!(null),
        Some(BatchGeometry {
            per_shard: 64,
            shards: 1,
            grad_accum_steps: 1,
        }),
        1,
    )
    .unwrap();
    let ck = load(&dir).unwrap();
    assert_eq!(ck.manifest.config["optimization"]["block_size"], json!(128));
}
