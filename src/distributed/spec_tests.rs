use super::*;
use std::collections::HashMap;

fn resolve(flags: &ProcessFlags, vars: &[(&str, &str)]) -> Result<Option<ProcessSpec>> {
    let env: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    ProcessSpec::resolve(flags, &|name| env.get(name).cloned())
}

fn flags() -> ProcessFlags {
    ProcessFlags {
        join_timeout: 300,
        heartbeat_timeout: 60,
        ..Default::default()
    }
}

#[test]
fn no_flags_and_no_scheduler_is_a_single_process_run() {
    assert_eq!(resolve(&flags(), &[]).unwrap(), None);
    assert_eq!(
        resolve(&flags(), &[("WORLD_SIZE", "1"), ("RANK", "0")]).unwrap(),
        None
    );
    assert_eq!(
        resolve(&flags(), &[("SLURM_NTASKS", "1"), ("SLURM_PROCID", "0")]).unwrap(),
        None
    );
}

#[test]
fn flags_describe_the_job() {
    let f = ProcessFlags {
        coordinator: Some("10.0.0.1:7777".into()),
        num_processes: Some(4),
        process_id: Some(3),
        ..flags()
    };
    let spec = resolve(&f, &[]).unwrap().unwrap();
    assert_eq!((spec.num_processes, spec.process_id), (4, 3));
    assert_eq!(spec.listen_address(), "0.0.0.0:7777");
}

#[test]
fn torchrun_and_slurm_variables_describe_the_job() {
    let torch = [
        ("RANK", "1"),
        ("WORLD_SIZE", "2"),
        ("MASTER_ADDR", "h0"),
        ("MASTER_PORT", "29500"),
    ];
    let spec = resolve(&flags(), &torch).unwrap().unwrap();
    assert_eq!(spec.coordinator, "h0:29500");
    assert_eq!((spec.num_processes, spec.process_id), (2, 1));

    let slurm = [
        ("SLURM_PROCID", "2"),
        ("SLURM_NTASKS", "8"),
        ("JAX_COORDINATOR_ADDRESS", "n1:1234"),
    ];
    let spec = resolve(&flags(), &slurm).unwrap().unwrap();
    assert_eq!(spec.coordinator, "n1:1234");
    assert_eq!((spec.num_processes, spec.process_id), (8, 2));
}

#[test]
fn conflicting_values_name_both_sources() {
    let f = ProcessFlags {
        process_id: Some(0),
        ..flags()
    };
    let vars = [
        ("RANK", "1"),
        ("WORLD_SIZE", "2"),
        ("MASTER_ADDR", "h"),
        ("MASTER_PORT", "1"),
    ];
    let e = resolve(&f, &vars).unwrap_err().to_string();
    assert!(e.contains("--process-id") && e.contains("RANK=1"), "{e}");

    let vars = [("SLURM_NTASKS", "4"), ("WORLD_SIZE", "2"), ("RANK", "0")];
    let e = resolve(&flags(), &vars).unwrap_err().to_string();
    assert!(
        e.contains("WORLD_SIZE=2") && e.contains("SLURM_NTASKS=4"),
        "{e}"
    );

    let vars = [
        ("JAX_COORDINATOR_ADDRESS", "a:1"),
        ("MASTER_ADDR", "b"),
        ("MASTER_PORT", "2"),
        ("WORLD_SIZE", "2"),
        ("RANK", "0"),
    ];
    let e = resolve(&flags(), &vars).unwrap_err().to_string();
    assert!(
        e.contains("JAX_COORDINATOR_ADDRESS=a:1") && e.contains("MASTER_ADDR=b"),
        "{e}"
    );
}

#[test]
fn incomplete_or_invalid_jobs_are_errors() {
    let f = ProcessFlags {
        num_processes: Some(2),
        process_id: Some(0),
        ..flags()
    };
    let e = resolve(&f, &[]).unwrap_err().to_string();
    assert!(e.contains("--coordinator"), "{e}");

    let f = ProcessFlags {
        coordinator: Some("h:1".into()),
        num_processes: Some(2),
        process_id: Some(2),
        ..flags()
    };
    let e = resolve(&f, &[]).unwrap_err().to_string();
    assert!(e.contains("process id 2"), "{e}");

    let f = ProcessFlags {
        coordinator: Some("nohostport".into()),
        num_processes: Some(2),
        process_id: Some(1),
        ..flags()
    };
    let e = resolve(&f, &[]).unwrap_err().to_string();
    assert!(e.contains("HOST:PORT"), "{e}");

    let e = resolve(&flags(), &[("MASTER_ADDR", "h")])
        .unwrap_err()
        .to_string();
    assert!(e.contains("MASTER_PORT"), "{e}");

    let e = resolve(&flags(), &[("WORLD_SIZE", "two")])
        .unwrap_err()
        .to_string();
    assert!(e.contains("WORLD_SIZE=\"two\""), "{e}");
}
