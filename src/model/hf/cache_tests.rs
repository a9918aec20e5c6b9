use super::*;

/// Writes `id` into the cache `hub` as huggingface_hub does: the file in `blobs/`, a symlink to
/// it in `snapshots/<rev>/config.json`, and `refs/main` naming `<rev>` (when `main`).
fn cache_model(hub: &Path, id: &str, rev: &str, main: bool) -> PathBuf {
    let repo = hub.join(repo_folder(id));
    let snap = repo.join("snapshots").join(rev);
    std::fs::create_dir_all(&snap).unwrap();
    std::fs::create_dir_all(repo.join("blobs")).unwrap();
    let blob = repo.join("blobs").join(format!("blob-{rev}"));
    std::fs::write(&blob, "{}").unwrap();
    std::os::unix::fs::symlink(
        Path::new("../../blobs").join(blob.file_name().unwrap()),
        snap.join("config.json"),
    )
    .unwrap();
    if main {
        std::fs::create_dir_all(repo.join("refs")).unwrap();
        std::fs::write(repo.join("refs").join("main"), rev).unwrap();
    }
    snap
}

fn hub(dir: &Path) -> HubCache {
    HubCache {
        dir: dir.to_path_buf(),
        origin: "HF_HUB_CACHE".into(),
    }
}

#[test]
fn ids_and_paths_are_told_apart() {
    for id in ["google/gemma-7b", "gemma-7b", "Qwen/Qwen2.5-0.5B", "gpt2"] {
        assert!(is_model_id(id), "{id}");
    }
    for not in [
        "/abs/path",
        "./rel",
        "runs/a/b",
        "a--b/c",
        "../up",
        "with space",
        "org/",
        "",
    ] {
        assert!(!is_model_id(not), "{not}");
    }
}

#[test]
fn the_cache_directory_follows_huggingface_hub() {
    let vars = |set: &'static [(&'static str, &'static str)]| {
        move |k: &str| {
            set.iter()
                .find(|(key, _)| *key == k)
                .map(|(_, v)| PathBuf::from(v))
        }
    };
    let dir = |set| HubCache::from_vars(vars(set)).map(|c| c.dir);
    assert_eq!(
        dir(&[("HF_HUB_CACHE", "/a"), ("HF_HOME", "/b"), ("HOME", "/h")]),
        Some(PathBuf::from("/a"))
    );
    assert_eq!(
        dir(&[("HF_HUB_CACHE", ""), ("HF_HOME", "/b"), ("HOME", "/h")]),
        Some(PathBuf::from("/b/hub"))
    );
    assert_eq!(
        dir(&[("XDG_CACHE_HOME", "/x"), ("HOME", "/h")]),
        Some(PathBuf::from("/x/huggingface/hub"))
    );
    assert_eq!(
        dir(&[("HOME", "/h")]),
        Some(PathBuf::from("/h/.cache/huggingface/hub"))
    );
    assert_eq!(dir(&[]), None);
}

#[test]
fn ids_and_unique_short_names_resolve_to_the_main_snapshot() {
    let tmp = tempfile::tempdir().unwrap();
    let old = cache_model(tmp.path(), "google/gemma-7b", "aaa", false);
    let main = cache_model(tmp.path(), "google/gemma-7b", "bbb", true);
    assert_ne!(old, main);
    let cache = hub(tmp.path());
    assert_eq!(resolve("google/gemma-7b", &cache).unwrap(), main);
    assert_eq!(resolve("gemma-7b", &cache).unwrap(), main);
    // The symlinked config.json reads through to its blob.
    assert_eq!(
        std::fs::read_to_string(main.join("config.json")).unwrap(),
        "{}"
    );
    // Without refs/main, the only snapshot.
    let only = cache_model(tmp.path(), "org/pinned", "ccc", false);
    assert_eq!(resolve("pinned", &cache).unwrap(), only);
    // A repository without an organisation.
    let bare = cache_model(tmp.path(), "gpt2", "ddd", true);
    assert_eq!(resolve("gpt2", &cache).unwrap(), bare);
}

#[test]
fn ambiguous_missing_and_broken_names_say_why() {
    let tmp = tempfile::tempdir().unwrap();
    cache_model(tmp.path(), "google/gemma-2b", "a1", true);
    cache_model(tmp.path(), "someone/gemma-2b", "b1", true);
    let cache = hub(tmp.path());
    let e = resolve("gemma-2b", &cache).unwrap_err().to_string();
    assert!(
        e.contains("matches 2 cached models") && e.contains("google/gemma-2b, someone/gemma-2b"),
        "{e}"
    );
    let e = resolve("google/gemma-7b", &cache).unwrap_err().to_string();
    assert!(e.contains("models--google--gemma-7b"), "{e}");
    assert!(
        e.contains("huggingface-cli download google/gemma-7b"),
        "{e}"
    );
    let e = resolve("gemma-7b", &cache).unwrap_err().to_string();
    assert!(e.contains("models--*--gemma-7b"), "{e}");
    // refs/main naming a snapshot that is not there.
    let repo = tmp.path().join(repo_folder("google/gemma-2b"));
    std::fs::write(repo.join("refs").join("main"), "zzz").unwrap();
    let e = resolve("google/gemma-2b", &cache).unwrap_err().to_string();
    assert!(e.contains("snapshots/zzz is missing"), "{e}");
    // Two snapshots and no refs/main.
    cache_model(tmp.path(), "x/two", "r1", false);
    cache_model(tmp.path(), "x/two", "r2", false);
    let e = resolve("x/two", &cache).unwrap_err().to_string();
    assert!(e.contains("2 snapshots (r1, r2)"), "{e}");
}

#[test]
fn an_existing_directory_is_taken_as_it_is() {
    let tmp = tempfile::tempdir().unwrap();
    assert_eq!(local_dir(tmp.path()).unwrap(), tmp.path());
    let not_an_id = Path::new("/nonexistent/a/b");
    assert_eq!(local_dir(not_an_id).unwrap(), not_an_id);
}
