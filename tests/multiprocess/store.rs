//! The key-value store and job membership, in one test process (threads as processes).

use rand::{Rng, RngCore, SeedableRng};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use vishwam::distributed::{DistributedError, ProcessSpec, Session, StoreClient, StoreServer};

const LONG: Duration = Duration::from_secs(20);

fn server(processes: usize) -> (StoreServer, String) {
    let server = StoreServer::start("127.0.0.1:0", processes, LONG).unwrap();
    let address = server.address().to_string();
    (server, address)
}

/// A free loopback port (bound, read, released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn blocking_gets_wait_for_puts_from_other_clients() {
    let (_server, address) = server(1);
    let waiting = Arc::new(AtomicUsize::new(0));
    let getters: Vec<_> = (0..8)
        .map(|i| {
            let (address, waiting) = (address.clone(), waiting.clone());
            std::thread::spawn(move || {
                let client = StoreClient::new(&address);
                waiting.fetch_add(1, Ordering::SeqCst);
                client.get(format!("key/{i}").as_bytes(), LONG).unwrap()
            })
        })
        .collect();
    while waiting.load(Ordering::SeqCst) < 8 {
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(100));
    let putter = StoreClient::new(&address);
    for i in (0..8).rev() {
        putter
            .put(
                format!("key/{i}").as_bytes(),
                format!("value {i}").as_bytes(),
            )
            .unwrap();
    }
    for (i, g) in getters.into_iter().enumerate() {
        assert_eq!(g.join().unwrap(), format!("value {i}").as_bytes());
    }
}

#[test]
fn a_get_of_a_missing_key_times_out_and_try_get_answers_at_once() {
    let (_server, address) = server(1);
    let client = StoreClient::new(&address);
    let start = Instant::now();
    let e = client
        .get(b"never", Duration::from_millis(300))
        .unwrap_err();
    let waited = start.elapsed();
    assert!(
        matches!(
            e,
            DistributedError::Timeout {
                timeout_ms: 300,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("never"), "{e}");
    // At least the timeout; at most the timeout plus a generous scheduling margin.
    assert!(
        waited >= Duration::from_millis(300) && waited < Duration::from_secs(10),
        "{waited:?}"
    );
    let start = Instant::now();
    assert_eq!(client.try_get(b"never").unwrap(), None);
    assert!(start.elapsed() < Duration::from_secs(5));
    client.put(b"now", b"here").unwrap();
    assert_eq!(
        client.try_get(b"now").unwrap().as_deref(),
        Some(&b"here"[..])
    );
    // A later put replaces the value.
    client.put(b"now", b"again").unwrap();
    assert_eq!(client.get(b"now", LONG).unwrap(), b"again");
}

#[test]
fn keys_and_values_are_arbitrary_bytes() {
    let (_server, address) = server(1);
    let client = StoreClient::new(&address);
    let every_byte: Vec<u8> = (0..=255u8).chain((0..=255u8).rev()).collect();
    let key = b"nccl\0clique\0\xff\x00id".to_vec();
    client.put(&key, &every_byte).unwrap();
    assert_eq!(client.get(&key, LONG).unwrap(), every_byte);
    // A key that differs only after a NUL is another key.
    assert_eq!(client.try_get(b"nccl\0clique\0\xff\x00iD").unwrap(), None);
    client.put(b"empty", b"").unwrap();
    assert_eq!(client.try_get(b"empty").unwrap().as_deref(), Some(&b""[..]));
    let mut big = vec![0u8; 3 << 20];
    rand_chacha::ChaCha8Rng::seed_from_u64(7).fill_bytes(&mut big);
    client.put(b"big", &big).unwrap();
    assert_eq!(client.get(b"big", LONG).unwrap(), big);
}

#[test]
fn many_keys_from_concurrent_clients() {
    let (_server, address) = server(1);
    let writers: Vec<_> = (0..4u64)
        .map(|w| {
            let address = address.clone();
            std::thread::spawn(move || {
                let client = StoreClient::new(&address);
                let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(w);
                let mut written = Vec::new();
                for i in 0..400 {
                    let len = rng.gen_range(0..64);
                    let value: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
                    let key = format!("writer{w}/{i}").into_bytes();
                    client.put(&key, &value).unwrap();
                    written.push((key, value));
                }
                written
            })
        })
        .collect();
    let written: Vec<(Vec<u8>, Vec<u8>)> = writers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    assert_eq!(written.len(), 1600);
    let reader = StoreClient::new(&address);
    for (key, value) in &written {
        assert_eq!(reader.try_get(key).unwrap().as_ref(), Some(value));
    }
}

fn spec(port: u16, processes: usize, id: usize, heartbeat: Duration) -> ProcessSpec {
    ProcessSpec {
        coordinator: format!("127.0.0.1:{port}"),
        num_processes: processes,
        process_id: id,
        join_timeout: LONG,
        heartbeat_timeout: heartbeat,
    }
}

fn ignore_failure() -> vishwam::distributed::FailureHook {
    Box::new(|_| {})
}

#[test]
fn processes_join_meet_at_barriers_and_shut_down_cleanly() {
    let port = free_port();
    // Process 3 starts first: it retries until process 0 listens.
    let joins: Vec<_> = (0..4)
        .rev()
        .map(|id| {
            std::thread::spawn(move || {
                if id == 0 {
                    std::thread::sleep(Duration::from_millis(300));
                }
                let session = Session::join(&spec(port, 4, id, LONG), ignore_failure()).unwrap();
                session
                    .store()
                    .put(format!("hello/{id}").as_bytes(), &[id as u8, 0, 1])
                    .unwrap();
                session.barrier("after-hello", LONG).unwrap();
                // After the barrier every process's key is there.
                for other in 0..4 {
                    let v = session
                        .store()
                        .try_get(format!("hello/{other}").as_bytes())
                        .unwrap();
                    assert_eq!(v, Some(vec![other as u8, 0, 1]));
                }
                session.finish().unwrap();
            })
        })
        .collect();
    for j in joins {
        j.join().unwrap();
    }
}

#[test]
fn a_second_process_with_the_same_id_is_refused() {
    let port = free_port();
    let first =
        std::thread::spawn(move || Session::join(&spec(port, 2, 0, LONG), ignore_failure()));
    std::thread::sleep(Duration::from_millis(300));
    let mut impostor = spec(port, 2, 0, LONG);
    impostor.join_timeout = Duration::from_secs(2);
    // The impostor cannot bind process 0's port, so it fails with the listen error;
    // a duplicate non-zero id is refused by the store.
    assert!(Session::join(&impostor, ignore_failure()).is_err());
    let second = Session::join(&spec(port, 2, 1, LONG), ignore_failure()).unwrap();
    let e = Session::join(&spec(port, 2, 1, LONG), ignore_failure())
        .unwrap_err()
        .to_string();
    assert!(e.contains("two processes claim process id 1"), "{e}");
    let first = first.join().unwrap().unwrap();
    let done = std::thread::spawn(move || first.finish());
    second.finish().unwrap();
    done.join().unwrap().unwrap();
}

#[test]
fn a_process_that_disappears_fails_the_job_for_the_others() {
    let port = free_port();
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let hook = |failures: &Arc<Mutex<Vec<String>>>| -> vishwam::distributed::FailureHook {
        let failures = failures.clone();
        Box::new(move |e: &DistributedError| failures.lock().unwrap().push(e.to_string()))
    };
    let sessions: Vec<_> = (0..3)
        .map(|id| {
            let hook = hook(&failures);
            std::thread::spawn(move || Session::join(&spec(port, 3, id, LONG), hook).unwrap())
        })
        .collect();
    let mut sessions: Vec<Session> = sessions.into_iter().map(|s| s.join().unwrap()).collect();
    let survivor = sessions.remove(0);
    let waiting = {
        let store = sessions[0].store().clone();
        std::thread::spawn(move || store.get(b"never put", LONG))
    };
    std::thread::sleep(Duration::from_millis(200));
    let start = Instant::now();
    // Process 2 goes away without finishing: its connection closes, as when it is killed.
    drop(sessions.pop());
    let e = waiting.join().unwrap().unwrap_err();
    assert!(matches!(e, DistributedError::JobFailed(_)), "{e}");
    assert!(
        e.to_string().contains("process 2 lost its connection"),
        "{e}"
    );
    // The waiting get ended well before its own timeout.
    assert!(start.elapsed() < LONG / 2, "{:?}", start.elapsed());
    // Every remaining process's heartbeat thread hears of it within a few heartbeats.
    let deadline = Instant::now() + Duration::from_secs(10);
    while failures.lock().unwrap().len() < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let seen = failures.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(seen.iter().all(|f| f.contains("process 2")), "{seen:?}");
    let e = survivor.barrier("too late", LONG).unwrap_err();
    assert!(e.to_string().contains("process 2"), "{e}");
}

/// The plugin's view of the store: its keys live under `pjrt/`, a get that times out is
/// `DeadlineExceeded` and a failed job `Aborted`, as the plugin's callbacks report them.
#[test]
fn the_plugin_store_prefixes_keys_and_maps_errors_to_pjrt_codes() {
    use vishwam::distributed::PluginStore;
    use vishwam::runtime::{KeyValueStore, PjrtCode};
    let (_server, address) = server(1);
    let client = Arc::new(StoreClient::new(&address));
    let plugin = PluginStore::new(client.clone());
    plugin
        .put(b"local_topology/cuda/0", b"\x08\x00\x12")
        .unwrap();
    assert_eq!(
        client
            .try_get(b"pjrt/local_topology/cuda/0")
            .unwrap()
            .as_deref(),
        Some(&b"\x08\x00\x12"[..])
    );
    assert_eq!(
        plugin.try_get(b"local_topology/cuda/0").unwrap().unwrap(),
        b"\x08\x00\x12"
    );
    let e = plugin
        .get(b"global_topology/cuda", Duration::from_millis(100))
        .unwrap_err();
    assert_eq!(e.code, PjrtCode::DeadlineExceeded, "{e:?}");
    client.fail(0, "out of memory").unwrap();
    let e = plugin.get(b"global_topology/cuda", LONG).unwrap_err();
    assert_eq!(e.code, PjrtCode::Aborted, "{e:?}");
    assert!(
        e.message.contains("process 0 failed: out of memory"),
        "{e:?}"
    );
}

/// A CPU client created as process 1 of 2 with the callbacks: its devices belong to process
/// 1 and carry that process's ids (the plugin ignores the store itself).
#[test]
fn a_cpu_client_created_as_process_one_owns_its_devices() {
    use vishwam::runtime::{ClientSpec, ProcessPlacement};
    let (_server, address) = server(2);
    let placement = ProcessPlacement {
        process_id: 1,
        num_processes: 2,
        store: Arc::new(vishwam::distributed::PluginStore::new(Arc::new(
            StoreClient::new(&address),
        ))),
        visible_devices: None,
        extra_options: Vec::new(),
    };
    let client = ClientSpec::cpu(2).open_as(Some(&placement)).unwrap();
    assert_eq!(client.process_index().unwrap(), 1);
    let devices = client.global_devices().unwrap();
    assert_eq!(devices.len(), 2);
    assert!(
        devices
            .iter()
            .all(|d| d.process_index == 1 && d.addressable),
        "{devices:?}"
    );
    let mut ids: Vec<i32> = devices.iter().map(|d| d.id).collect();
    ids.dedup();
    assert_eq!(ids.len(), 2, "{devices:?}");
    // The CPU plugin has no `visible_devices`: asking for it is an error naming the option.
    let cuda_only = ProcessPlacement {
        visible_devices: Some(vec![0]),
        ..placement
    };
    let e = ClientSpec::cpu(1)
        .open_as(Some(&cuda_only))
        .unwrap_err()
        .to_string();
    assert!(e.contains("--visible-devices") && e.contains("cpu"), "{e}");
}
