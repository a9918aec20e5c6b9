//! The multi-process side of `vishwam train` and `vishwam doctor`: join the job, open the
//! client as this process, agree on the job's global device list, and check that the plugin
//! can run one program over every process's devices.

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};
use vishwam::distributed::{ProcessFlags, ProcessSpec, Session};
use vishwam::runtime::{Arg, Client, ClientSpec, CompileOptions, GlobalDevice};

/// A joined job: the session, this process's client and the job's devices.
pub struct Job {
    /// The session (finish it at the end).
    pub session: Session,
    /// This process's client.
    pub client: Client,
    /// The job's devices: every process's addressable devices, by process then the plugin's
    /// order, as every process sees them.
    pub devices: Vec<GlobalDevice>,
    /// The plugin's own global list (`PJRT_Client_Devices`).
    pub plugin_devices: Vec<GlobalDevice>,
}

/// One device in the store's exchange of device lists.
#[derive(Serialize, Deserialize)]
struct Published {
    id: i32,
    process_index: i32,
    kind: String,
}

/// The job `flags` and the environment describe; `None` for a single-process run (then
/// `--visible-devices` is refused: it is an option of multi-process CUDA clients).
pub fn spec_of(flags: &ProcessFlags) -> anyhow::Result<Option<ProcessSpec>> {
    let spec = ProcessSpec::from_flags(flags)?;
    if spec.is_none() && (flags.visible_devices.is_some() || !flags.client_options.is_empty()) {
        bail!(
            "--visible-devices and --client-option are for a multi-process run (with \
             --coordinator, --num-processes and --process-id)"
        );
    }
    Ok(spec)
}

/// Joins the job and opens this process's client. A failure of the job while this process
/// runs (another process killed, hung or failing) ends this process with exit code 1 and
/// the reason, from the session's heartbeat thread, so that no process waits forever on a
/// collective with a dead peer.
pub fn join(
    spec: &ProcessSpec,
    flags: &ProcessFlags,
    client_spec: &ClientSpec,
) -> anyhow::Result<Job> {
    let process_id = spec.process_id;
    let session = Session::join(
        spec,
        Box::new(move |e| {
            eprintln!("error: process {process_id}: {e}");
            std::process::exit(1);
        }),
    )
    .with_context(|| {
        format!(
            "process {process_id} joining the job at {}",
            spec.coordinator
        )
    })?;
    // From here on, a failure of this process is reported to the others before it exits.
    match open_and_list(&session, spec, flags, client_spec) {
        Ok((client, devices, plugin_devices)) => Ok(Job {
            session,
            client,
            devices,
            plugin_devices,
        }),
        Err(e) => {
            session.abort(&format!("{e:#}"), LINGER);
            Err(e)
        }
    }
}

/// This process's client, the job's devices and the plugin's own list.
fn open_and_list(
    session: &Session,
    spec: &ProcessSpec,
    flags: &ProcessFlags,
    client_spec: &ClientSpec,
) -> anyhow::Result<(Client, Vec<GlobalDevice>, Vec<GlobalDevice>)> {
    let process_id = spec.process_id;
    let placement = session.placement(flags);
    let client = client_spec.open_as(Some(&placement)).with_context(|| {
        format!(
            "process {process_id}: creating the {} client as node {process_id} of {}",
            client_spec.platform.name(),
            spec.num_processes
        )
    })?;
    let plugin_devices = client.global_devices()?;
    let own: Vec<Published> = plugin_devices
        .iter()
        .filter(|d| d.addressable)
        .map(|d| Published {
            id: d.id,
            process_index: d.process_index,
            kind: d.kind.clone(),
        })
        .collect();
    let store = session.store();
    store.put(
        format!("vishwam/devices/{process_id}").as_bytes(),
        &serde_json::to_vec(&own)?,
    )?;
    session.barrier("vishwam/devices", spec.join_timeout)?;
    let mut devices = Vec::new();
    for r in 0..spec.num_processes {
        let raw = store.get(format!("vishwam/devices/{r}").as_bytes(), spec.join_timeout)?;
        let theirs: Vec<Published> = serde_json::from_slice(&raw)
            .with_context(|| format!("process {r}'s device list in the store"))?;
        for d in theirs {
            if d.process_index != r as i32 {
                bail!(
                    "process {r}'s plugin reports its device {} as belonging to process {}: \
                     the processes disagree on who they are (check --process-id / RANK)",
                    d.id,
                    d.process_index
                );
            }
            devices.push(GlobalDevice {
                id: d.id,
                process_index: d.process_index,
                kind: d.kind,
                addressable: r == process_id,
            });
        }
    }
    let mut ids: Vec<i32> = devices.iter().map(|d| d.id).collect();
    ids.sort_unstable();
    if let Some(w) = ids.windows(2).find(|w| w[0] == w[1]) {
        bail!(
            "two processes report a device with the id {}: the job's device ids must be unique",
            w[0]
        );
    }
    // A plugin that joined its peers lists the whole job itself; it must agree with the store.
    if plugin_devices.iter().any(|d| !d.addressable) {
        let mut theirs: Vec<(i32, i32)> = plugin_devices
            .iter()
            .map(|d| (d.id, d.process_index))
            .collect();
        let mut ours: Vec<(i32, i32)> = devices.iter().map(|d| (d.id, d.process_index)).collect();
        theirs.sort_unstable();
        ours.sort_unstable();
        if theirs != ours {
            bail!(
                "the plugin's global device list {theirs:?} (id, process) differs from the \
                 devices the processes report {ours:?}"
            );
        }
    }
    Ok((client, devices, plugin_devices))
}

/// Prints the job's devices as this process sees them.
pub fn print_devices(job: &Job) {
    let spec = job.session.spec();
    println!(
        "process:       {} of {} (store at {})",
        spec.process_id, spec.num_processes, spec.coordinator
    );
    println!(
        "plugin lists:  {} devices ({} addressable)",
        job.plugin_devices.len(),
        job.plugin_devices.iter().filter(|d| d.addressable).count()
    );
    println!("job devices:   {}", job.devices.len());
    for d in &job.devices {
        println!(
            "  id={} process={} kind={} addressable={}",
            d.id,
            d.process_index,
            d.kind,
            if d.addressable { "yes" } else { "no" }
        );
    }
}

/// Compiles and runs one program whose devices are every device of the job: a sum over a
/// vector sharded one element per device, so every device gets 1 + 2 + ... + n. Fails with
/// the plugin's own message where it cannot compile such a program (the CPU plugin:
/// "Multiprocess computations aren't implemented on the CPU backend").
pub fn check_cross_process_program(job: &Job) -> anyhow::Result<Duration> {
    let n = job.devices.len();
    let mlir = format!(
        "module @cross_process attributes {{mhlo.num_partitions = {n} : i32, mhlo.num_replicas = 1 : i32}} {{\n  \
         sdy.mesh @mesh = <[\"all\"={n}]>\n  \
         func.func public @main(%x: tensor<{n}xf32> {{sdy.sharding = #sdy.sharding<@mesh, [{{\"all\"}}]>}}) -> (tensor<f32> {{sdy.sharding = #sdy.sharding<@mesh, []>}}) {{\n    \
         %zero = stablehlo.constant dense<0.0> : tensor<f32>\n    \
         %sum = stablehlo.reduce(%x init: %zero) applies stablehlo.add across dimensions = [0] : (tensor<{n}xf32>, tensor<f32>) -> tensor<f32>\n    \
         return %sum : tensor<f32>\n  }}\n}}"
    );
    let mut options = CompileOptions::for_partitions(n);
    options.device_assignment = job.devices.iter().map(|d| d.id as i64).collect();
    let start = Instant::now();
    let exe = job.client.compile(&mlir, &options).map_err(|e| {
        anyhow::anyhow!(
            "the {} plugin cannot compile a program whose devices span the job's {} processes \
             ({e}); a multi-process run needs a plugin with cross-process collectives (CUDA: \
             one process per GPU or per host); the CPU plugin joins the job and lists its \
             devices but cannot run such a program",
            job.client.platform_name().unwrap_or_default(),
            job.session.num_processes()
        )
    })?;
    // One element per addressable device: its position in the job's list plus one.
    let mut buffers = Vec::new();
    for (local, (position, _)) in job
        .devices
        .iter()
        .enumerate()
        .filter(|(_, d)| d.addressable)
        .enumerate()
    {
        buffers.push(
            job.client
                .buffer_from_slice(&[(position + 1) as f32], &[1], local)?,
        );
    }
    let args = buffers.iter().map(|b| vec![Arg::Keep(b)]).collect();
    let outputs = exe.execute(args)?;
    let want = (n * (n + 1) / 2) as f32;
    for out in outputs {
        let got = out[0].to_vec::<f32>()?[0];
        if got != want {
            bail!("the cross-process sum over {n} devices gave {got}, not {want}");
        }
    }
    Ok(start.elapsed())
}

/// How long process 0 keeps its store up after a failure, for the others to read why.
pub(super) const LINGER: Duration = Duration::from_secs(10);

/// `vishwam doctor` as one process of a job: the job's devices as this process sees them,
/// then one program over all of them.
pub fn doctor(
    runtime: &super::RuntimeArgs,
    flags: &ProcessFlags,
    spec: &ProcessSpec,
) -> anyhow::Result<std::process::ExitCode> {
    let client_spec = ClientSpec {
        platform: runtime.platform()?,
        devices: runtime.devices,
        plugin: runtime.plugin.clone(),
        config_plugin: None,
    };
    let job = join(spec, flags, &client_spec)?;
    println!("plugin:        {}", job.client.api().path().display());
    println!(
        "platform:      {} ({})",
        job.client.platform_name()?,
        job.client.platform_version()?
    );
    print_devices(&job);
    match check_cross_process_program(&job) {
        Ok(took) => {
            println!(
                "cross-process: a sum over the job's {} devices compiled and ran in {:.1} ms -> PASS",
                job.devices.len(),
                took.as_secs_f64() * 1e3
            );
            job.session.finish()?;
            Ok(std::process::ExitCode::SUCCESS)
        }
        Err(e) => {
            let message = format!("{e:#}");
            job.session.abort(&message, LINGER);
            Err(e)
        }
    }
}
