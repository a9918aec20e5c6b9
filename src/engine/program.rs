//! Compiling a traced function on the engine's mesh and running it on sharded arrays.

use super::{Engine, EngineError, ShardedArray};
use crate::runtime::{
    Arg, CacheOutcome, CompileOptions, CompiledMemoryStats, ElementType, LoadedExecutable,
};
use std::time::Instant;
use vishwam_hlo::{DType, Func, PartitionSpec, PrintOptions, TensorType};

/// The device element type of an hlo dtype.
pub fn element_type(dtype: DType) -> ElementType {
    match dtype {
        DType::F32 => ElementType::F32,
        DType::F64 => ElementType::F64,
        DType::BF16 => ElementType::BF16,
        DType::F16 => ElementType::F16,
        DType::F8E4M3FN => ElementType::F8E4M3FN,
        DType::F8E5M2 => ElementType::F8E5M2,
        DType::I32 => ElementType::S32,
        DType::I64 => ElementType::S64,
        DType::U32 => ElementType::U32,
        DType::U8 => ElementType::U8,
        DType::U64 => ElementType::U64,
        DType::I1 => ElementType::Pred,
    }
}

/// One argument or result of a compiled program: name, type and sharding.
#[derive(Debug, Clone, PartialEq)]
pub struct Slot {
    /// Name from the traced function.
    pub name: String,
    /// Global type.
    pub ty: TensorType,
    /// Sharding over the mesh (replicated when the function gave none).
    pub spec: PartitionSpec,
    /// For arguments: whether an output may reuse its buffer.
    pub donated: bool,
}

/// One argument of [`Program::run`].
pub enum Input<'a> {
    /// Stays valid after the call.
    Keep(&'a ShardedArray),
    /// May be reused for an aliased output; deleted afterwards.
    Donate(&'a mut ShardedArray),
}

impl Input<'_> {
    fn array(&self) -> &ShardedArray {
        match self {
            Input::Keep(a) => a,
            Input::Donate(a) => a,
        }
    }
}

/// What the compiler should know about a program beyond its text.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CompileHints {
    /// The program's matmuls take FP8 operands (`convert(f8) * scale` before a dot), to be
    /// compiled into FP8 GEMMs where the platform has them.
    pub fp8_matmuls: bool,
    /// Matmuls of two f32 operands may round them to TF32 on GPUs
    /// ([`PrintOptions::tf32_f32_dots`]): set for programs computing in a narrower dtype,
    /// whose f32 matmuls are backward-pass products of f32 cotangents. Without it, f32
    /// matmuls compute in full f32 on every platform.
    pub tf32_f32_matmuls: bool,
}

impl CompileHints {
    /// How a program described by these hints is printed for `mesh`.
    pub fn print_options(&self, mesh: vishwam_hlo::Mesh) -> PrintOptions {
        PrintOptions {
            tf32_f32_dots: self.tf32_f32_matmuls,
            ..PrintOptions::with_mesh(mesh)
        }
    }
}

/// A traced function compiled for the engine's mesh.
pub struct Program {
    /// The function's name.
    pub name: String,
    /// Arguments in order.
    pub params: Vec<Slot>,
    /// Results in order.
    pub outputs: Vec<Slot>,
    /// Seconds spent compiling (or loading from the cache).
    pub compile_seconds: f64,
    /// Whether the compile cache was hit.
    pub cache_outcome: CacheOutcome,
    executable: LoadedExecutable,
    /// For each of the executable's devices (its order of argument lists), the index of its
    /// buffers in a [`ShardedArray`]'s shards; `None` when that is the identity.
    argument_order: Option<Vec<usize>>,
    /// [`Program::memory_stats`], asked of the plugin once: the answer never changes, and
    /// the CPU plugin analyses the whole executable to give it (milliseconds a call).
    memory_stats: std::sync::OnceLock<CompiledMemoryStats>,
}

impl Engine {
    /// The StableHLO text of `func` for this engine's mesh.
    pub fn stablehlo(&self, func: &Func) -> Result<String, EngineError> {
        self.stablehlo_with(func, CompileHints::default())
    }

    /// [`Engine::stablehlo`] for a program described by `hints`.
    pub fn stablehlo_with(&self, func: &Func, hints: CompileHints) -> Result<String, EngineError> {
        Ok(func.to_stablehlo(&hints.print_options(self.mesh.clone()))?)
    }

    /// The compile options for this engine's mesh: SPMD with Shardy, devices in mesh order.
    /// With `VISHWAM_XLA_DUMP=DIR` set, XLA also writes its HLO before and after
    /// optimisation to DIR (for inspecting what the compiler made of a program).
    pub fn compile_options(&self) -> CompileOptions {
        let mut options = CompileOptions::for_partitions(self.mesh.num_devices());
        options.device_assignment = self.device_ids().iter().map(|&d| d as i64).collect();
        if let Some(dir) = std::env::var_os("VISHWAM_XLA_DUMP").filter(|d| !d.is_empty()) {
            use crate::runtime::OptionValue;
            options.overrides.push((
                "xla_dump_to".into(),
                OptionValue::Str(dir.to_string_lossy().into_owned()),
            ));
            options
                .overrides
                .push(("xla_dump_hlo_as_text".into(), OptionValue::Bool(true)));
        }
        options
    }

    /// Global device ids of the mesh's devices, in mesh order.
    fn device_ids(&self) -> &[i32] {
        self.placement.device_assignment()
    }

    /// For each device the executable runs on here (its order of argument lists), the local
    /// slot of the mesh position on that device; `None` when the two orders agree.
    fn argument_order(
        &self,
        executable: &LoadedExecutable,
    ) -> Result<Option<Vec<usize>>, EngineError> {
        let devices = executable.device_indices();
        let slots = self.placement.client_devices();
        let order = devices
            .iter()
            .map(|d| slots.iter().position(|s| s == d))
            .collect::<Option<Vec<usize>>>();
        let mut sorted = order.clone().unwrap_or_default();
        sorted.sort_unstable();
        if order.is_none() || sorted != (0..slots.len()).collect::<Vec<_>>() {
            return Err(EngineError::Shape(format!(
                "the compiled program runs on client devices {devices:?} here, but this \
                 process drives the mesh's positions {:?} on client devices {slots:?}",
                self.placement.local_positions()
            )));
        }
        Ok(order.filter(|o| o.iter().enumerate().any(|(d, &s)| d != s)))
    }

    /// The compile options for a program with `hints`: [`Engine::compile_options`], plus, on
    /// CUDA, Triton GEMM fusion off for a program with FP8 matmuls (XLA's Triton GEMM fusion
    /// claims `dot(convert(f8) * scale, ...)` before the cuBLASLt rewriter sees it and runs it
    /// as a bf16 GEMM; without it the rewriter emits FP8 cuBLASLt GEMMs, measured on an H100:
    /// 0 of 228 GEMMs in FP8 with Triton, 180 without).
    pub fn compile_options_with(&self, hints: CompileHints) -> Result<CompileOptions, EngineError> {
        use crate::runtime::OptionValue;
        let mut options = self.compile_options();
        if !self.client.platform_name()?.eq_ignore_ascii_case("cuda") {
            return Ok(options);
        }
        if hints.fp8_matmuls {
            options.overrides.push((
                "xla_gpu_enable_triton_gemm".into(),
                OptionValue::Bool(false),
            ));
        }
        Ok(options)
    }

    /// Prints, compiles (through the cache) and loads `func` on the mesh.
    pub fn compile(&self, func: &Func) -> Result<Program, EngineError> {
        self.compile_with(func, CompileHints::default())
    }

    /// [`Engine::compile`] for a program described by `hints`.
    pub fn compile_with(&self, func: &Func, hints: CompileHints) -> Result<Program, EngineError> {
        let text = self.stablehlo_with(func, hints)?;
        let start = Instant::now();
        let options = self.compile_options_with(hints)?;
        let (executable, cache_outcome) = self.cache.compile(&self.client, &text, &options)?;
        let compile_seconds = start.elapsed().as_secs_f64();
        let argument_order = self.argument_order(&executable)?;
        let slot =
            |name: &str, ty: &TensorType, spec: &Option<PartitionSpec>, donated: bool| Slot {
                name: name.to_string(),
                ty: ty.clone(),
                spec: spec.clone().unwrap_or_default(),
                donated,
            };
        let params = func
            .params
            .iter()
            .map(|p| slot(&p.name, &p.ty, &p.sharding, p.donate_to.is_some()))
            .collect();
        let outputs = func
            .outputs
            .iter()
            .map(|o| slot(&o.name, func.value_type(o.value), &o.sharding, false))
            .collect();
        tracing::debug!(
            "compiled {} in {:.2}s ({:?}), {} bytes of StableHLO",
            func.name,
            compile_seconds,
            cache_outcome,
            text.len()
        );
        Ok(Program {
            name: func.name.clone(),
            params,
            outputs,
            compile_seconds,
            cache_outcome,
            executable,
            argument_order,
            memory_stats: std::sync::OnceLock::new(),
        })
    }
}

impl Program {
    /// Position of the output called `name`.
    pub fn output_index(&self, name: &str) -> Option<usize> {
        self.outputs.iter().position(|o| o.name == name)
    }

    /// XLA's memory accounting per device.
    pub fn memory_stats(&self) -> Result<CompiledMemoryStats, EngineError> {
        if let Some(stats) = self.memory_stats.get() {
            return Ok(*stats);
        }
        let stats = self.executable.compiled_memory_stats()?;
        Ok(*self.memory_stats.get_or_init(|| stats))
    }

    /// Runs the program on sharded arguments (in parameter order) and returns the outputs.
    pub fn run(&self, inputs: Vec<Input<'_>>) -> Result<Vec<ShardedArray>, EngineError> {
        if inputs.len() != self.params.len() {
            return Err(EngineError::Shape(format!(
                "{} takes {} arguments ({}), got {}",
                self.name,
                self.params.len(),
                self.params
                    .iter()
                    .map(|p| p.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                inputs.len()
            )));
        }
        for (input, slot) in inputs.iter().zip(&self.params) {
            let a = input.array();
            let want = element_type(slot.ty.dtype);
            if a.element_type != want || a.shape != slot.ty.shape || a.spec != slot.spec {
                return Err(EngineError::Shape(format!(
                    "{}: argument `{}` must be {}{:?} split as {:?}, got {}{:?} split as {:?}",
                    self.name,
                    slot.name,
                    want.mlir_name(),
                    slot.ty.shape,
                    slot.spec,
                    a.element_type.mlir_name(),
                    a.shape,
                    a.spec
                )));
            }
        }
        let devices = self.executable.num_devices();
        let mut per_device: Vec<Vec<Arg<'_>>> = (0..devices)
            .map(|_| Vec::with_capacity(inputs.len()))
            .collect();
        for input in inputs {
            match input {
                Input::Keep(a) => {
                    for (d, shard) in a.shards.iter().enumerate() {
                        per_device[d].push(Arg::Keep(shard));
                    }
                }
                Input::Donate(a) => {
                    for (d, shard) in a.shards.iter_mut().enumerate() {
                        per_device[d].push(Arg::Donate(shard));
                    }
                }
            }
        }
        let results = match &self.argument_order {
            None => self.executable.execute(per_device)?,
            Some(order) => {
                let mut by_slot: Vec<Option<Vec<Arg<'_>>>> =
                    per_device.into_iter().map(Some).collect();
                let lists = order
                    .iter()
                    .map(|&s| by_slot[s].take().unwrap_or_default())
                    .collect();
                let mut outputs: Vec<Option<Vec<crate::runtime::Buffer>>> =
                    (0..order.len()).map(|_| None).collect();
                for (d, out) in self.executable.execute(lists)?.into_iter().enumerate() {
                    outputs[order[d]] = Some(out);
                }
                outputs.into_iter().map(Option::unwrap_or_default).collect()
            }
        };
        let mut columns: Vec<Vec<crate::runtime::Buffer>> =
            (0..self.outputs.len()).map(|_| Vec::new()).collect();
        for device_outputs in results {
            for (i, buffer) in device_outputs.into_iter().enumerate() {
                columns[i].push(buffer);
            }
        }
        Ok(columns
            .into_iter()
            .zip(&self.outputs)
            .map(|(shards, slot)| ShardedArray {
                element_type: element_type(slot.ty.dtype),
                shape: slot.ty.shape.clone(),
                spec: slot.spec.clone(),
                shards,
            })
            .collect())
    }
}
