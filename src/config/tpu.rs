//! Section `tpu`: the device mesh, the parallelism strategy and logical-axis rules.

use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;
use serde_json::Value;

use super::checks::Checks;
use super::error::{show, ConfigIssue};
use super::reader::{closest, config_enum, ObjectReader};

config_enum! {
    /// How parameters and batches are laid over the mesh (the rule set of the mesh module).
    pub enum DeviceStrategy {
        /// Batch split over `data`; parameters replicated.
        #[default]
        DataParallel => "data_parallel",
        /// Batch and parameters (ZeRO-3) split over the data axes.
        Fsdp => "fsdp",
        /// Megatron-style column/row splits of the weights over `model`.
        TensorParallel => "tensor_parallel",
        /// Data (or fsdp) parallel across `data` combined with tensor parallel across `model`.
        Hybrid => "hybrid",
    }
}

/// The logical axis names that parameters and activations declare (see the mesh module).
pub const LOGICAL_AXES: &[&str] = &[
    "batch", "length", "embed", "heads", "kv_heads", "head_dim", "mlp", "vocab", "expert", "layers",
];

/// Logical axes whose mesh axes split the batch when no `batch` rule is given.
pub const DEFAULT_BATCH_AXES: &[&str] = &["data", "fsdp"];

/// `tpu.mesh_shape`: mesh axes in order, with sizes; one size may be -1 (filled from devices).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeshShape {
    axes: Vec<(String, i64)>,
}

impl MeshShape {
    /// A mesh shape from `(axis, size)` pairs in order (checked by [`super::Config::validate`]).
    pub fn from_pairs<S: Into<String>>(pairs: impl IntoIterator<Item = (S, i64)>) -> MeshShape {
        MeshShape {
            axes: pairs
                .into_iter()
                .map(|(name, size)| (name.into(), size))
                .collect(),
        }
    }

    /// The axes in the order the user wrote them.
    pub fn axes(&self) -> &[(String, i64)] {
        &self.axes
    }

    /// The size of axis `name`, if the mesh has it (-1 when it is to be filled).
    pub fn size(&self, name: &str) -> Option<i64> {
        self.axes.iter().find(|(n, _)| n == name).map(|&(_, s)| s)
    }

    /// Sizes with the -1 axis filled from `devices`; `None` when that cannot be decided.
    pub fn resolve(&self, devices: Option<usize>) -> Option<Vec<(String, usize)>> {
        let fills = self.axes.iter().filter(|&&(_, s)| s == -1).count();
        let known: usize = self
            .axes
            .iter()
            .filter_map(|&(_, s)| usize::try_from(s).ok())
            .product();
        let fill = match (fills, devices) {
            (0, _) => 0,
            (1, Some(n)) if known >= 1 && n.is_multiple_of(known) => n / known,
            _ => return None,
        };
        self.axes
            .iter()
            .map(|(name, size)| match *size {
                -1 => Some((name.clone(), fill)),
                s if s >= 1 => Some((name.clone(), s as usize)),
                _ => None,
            })
            .collect()
    }

    /// Product of the sizes, when no axis is -1.
    pub fn fixed_product(&self) -> Option<usize> {
        self.axes
            .iter()
            .map(|&(_, s)| usize::try_from(s).ok())
            .product()
    }
}

impl Default for MeshShape {
    /// `{"data": -1}`: pure data parallelism over every device.
    fn default() -> Self {
        MeshShape::from_pairs([("data", -1)])
    }
}

impl std::fmt::Display for MeshShape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let body: Vec<String> = self
            .axes
            .iter()
            .map(|(n, s)| format!("\"{n}\": {s}"))
            .collect();
        write!(f, "{{{}}}", body.join(", "))
    }
}

impl Serialize for MeshShape {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.axes.len()))?;
        for (name, size) in &self.axes {
            map.serialize_entry(name, size)?;
        }
        map.end()
    }
}

/// One entry of `tpu.logical_axis_rules`: `[logical_name, [mesh axes]]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LogicalAxisRule(
    /// A name from [`LOGICAL_AXES`].
    pub String,
    /// Mesh axes that split it (empty = replicated).
    pub Vec<String>,
);

/// Section `tpu`: device mesh and parallelism (used on every platform, despite the name).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TpuConfig {
    /// Number of devices (TPU cores, or GPUs / virtual CPU devices). Default null = from
    /// `runtime.devices` or the mesh.
    pub tpu_cores: Option<usize>,
    /// Physical topology of the devices, such as "2x2x2" (x first): it must hold exactly the
    /// devices the mesh spans, and it orders them over the mesh as JAX's
    /// `create_device_mesh` does (each mesh axis over whole physical axes, the last mesh axis
    /// first). Default null = the platform's device order.
    pub tpu_topology: Option<String>,
    /// Parallelism rule set. Default "data_parallel".
    pub device_strategy: DeviceStrategy,
    /// bf16 compute over f32 master weights. Default false.
    pub use_bfloat16: bool,
    /// Ordered mesh axes and sizes; one may be -1. Default {"data": -1}.
    pub mesh_shape: MeshShape,
    /// Overrides of the strategy's logical-axis rules. Default null (the strategy's own).
    pub logical_axis_rules: Option<Vec<LogicalAxisRule>>,
}

impl Default for TpuConfig {
    fn default() -> Self {
        TpuConfig {
            tpu_cores: None,
            tpu_topology: None,
            device_strategy: DeviceStrategy::DataParallel,
            use_bfloat16: false,
            mesh_shape: MeshShape::default(),
            logical_axis_rules: None,
        }
    }
}

const MESH_SIZE: &str = "an integer >= 1, or -1 for one axis filled from the device count";

impl TpuConfig {
    /// The sizes of `tpu_topology`, when it is valid.
    pub fn topology_dims(&self) -> Option<Vec<usize>> {
        let dims: Option<Vec<usize>> = self
            .tpu_topology
            .as_ref()?
            .split('x')
            .map(|d| d.parse().ok().filter(|&n| n >= 1))
            .collect();
        dims.filter(|d| (2..=3).contains(&d.len()))
    }

    /// Mesh axes that split the batch: those of the `batch` rule, or [`DEFAULT_BATCH_AXES`].
    pub fn batch_axes(&self) -> Vec<String> {
        let rule = self
            .logical_axis_rules
            .iter()
            .flatten()
            .find(|rule| rule.0 == "batch");
        match rule {
            Some(rule) => rule.1.clone(),
            None => DEFAULT_BATCH_AXES.iter().map(|s| s.to_string()).collect(),
        }
    }

    pub(crate) fn read(&mut self, r: &mut ObjectReader<'_>) {
        r.opt_integer("tpu_cores", &mut self.tpu_cores, "a positive integer");
        r.opt_text("tpu_topology", &mut self.tpu_topology);
        r.choice("device_strategy", &mut self.device_strategy);
        r.flag("use_bfloat16", &mut self.use_bfloat16);
        r.custom("mesh_shape", &mut self.mesh_shape, read_mesh_shape);
        r.custom(
            "logical_axis_rules",
            &mut self.logical_axis_rules,
            read_axis_rules,
        );
    }

    pub(crate) fn validate(&self, c: &mut Checks) {
        if let Some(cores) = self.tpu_cores {
            c.positive("tpu.tpu_cores", cores);
        }
        if let Some(topology) = &self.tpu_topology {
            c.ensure(
                self.topology_dims().is_some(),
                "tpu.tpu_topology",
                "a TPU topology such as \"2x2\" or \"2x2x1\"",
                format!("{topology:?}"),
            );
        }
        self.validate_mesh(c);
        self.validate_rules(c);
    }

    fn validate_mesh(&self, c: &mut Checks) {
        if self.mesh_shape.axes.is_empty() {
            c.fail(
                "tpu.mesh_shape",
                "an object with at least one axis, such as {\"data\": -1}",
                "{}",
            );
        }
        let mut fill: Option<&str> = None;
        for (name, size) in &self.mesh_shape.axes {
            let key = format!("tpu.mesh_shape.{name}");
            c.ensure(
                !name.trim().is_empty(),
                "tpu.mesh_shape",
                "axis names that are not empty",
                "\"\"",
            );
            c.ensure(*size >= 1 || *size == -1, &key, MESH_SIZE, size);
            if *size == -1 {
                match fill {
                    Some(first) => c.conflict(
                        &format!("tpu.mesh_shape.{first}"),
                        -1,
                        &key,
                        -1,
                        "only one mesh axis may be -1 (filled from the device count)",
                    ),
                    None => fill = Some(name),
                }
            }
        }
    }

    fn validate_rules(&self, c: &mut Checks) {
        let Some(rules) = &self.logical_axis_rules else {
            return;
        };
        let axes: Vec<&str> = self
            .mesh_shape
            .axes
            .iter()
            .map(|(n, _)| n.as_str())
            .collect();
        for (i, LogicalAxisRule(logical, mesh_axes)) in rules.iter().enumerate() {
            let key = format!("tpu.logical_axis_rules[{i}]");
            if !LOGICAL_AXES.contains(&logical.as_str()) {
                let near = closest(logical, LOGICAL_AXES.iter().copied())
                    .map(|n| format!(" (did you mean \"{n}\"?)"))
                    .unwrap_or_default();
                c.fail(
                    &key,
                    format!(
                        "a rule for a logical axis among [{}]{near}",
                        LOGICAL_AXES.join(", ")
                    ),
                    format!("{logical:?}"),
                );
            }
            if rules[..i].iter().any(|earlier| &earlier.0 == logical) {
                c.fail(
                    &key,
                    "the only rule for its logical axis (each logical axis gets one rule)",
                    format!("{logical:?}"),
                );
            }
            for (j, axis) in mesh_axes.iter().enumerate() {
                if !axes.contains(&axis.as_str()) {
                    c.fail(
                        &key,
                        format!("a rule naming axes of tpu.mesh_shape [{}]", axes.join(", ")),
                        format!("{axis:?}"),
                    );
                }
                if mesh_axes[..j].contains(axis) {
                    c.fail(
                        &key,
                        "a rule naming each mesh axis at most once",
                        format!("{axis:?}"),
                    );
                }
            }
        }
    }
}

fn read_mesh_shape(value: &Value, path: &str, issues: &mut Vec<ConfigIssue>) -> Option<MeshShape> {
    let Value::Object(map) = value else {
        issues.push(ConfigIssue::Invalid {
            key: path.to_string(),
            expected: "an object of axis sizes in mesh order, such as {\"data\": 8, \"model\": 1}"
                .into(),
            got: show(value),
        });
        return None;
    };
    let before = issues.len();
    let mut axes = Vec::with_capacity(map.len());
    for (name, size) in map {
        match size.as_i64() {
            Some(s) => axes.push((name.clone(), s)),
            None => issues.push(ConfigIssue::Invalid {
                key: format!("{path}.{name}"),
                expected: MESH_SIZE.into(),
                got: show(size),
            }),
        }
    }
    (issues.len() == before).then_some(MeshShape { axes })
}

fn read_axis_rules(
    value: &Value,
    path: &str,
    issues: &mut Vec<ConfigIssue>,
) -> Option<Option<Vec<LogicalAxisRule>>> {
    const ENTRY: &str = "a pair [logical_name, [mesh axes]] (the axes may also be one string, or null for replicated)";
    let entries = match value {
        Value::Null => return Some(None),
        Value::Array(entries) => entries,
        _ => {
            issues.push(ConfigIssue::Invalid {
                key: path.to_string(),
                expected: "null or a list of [logical_name, [mesh axes]] pairs".into(),
                got: show(value),
            });
            return None;
        }
    };
    let before = issues.len();
    let mut rules = Vec::with_capacity(entries.len());
    for (i, entry) in entries.iter().enumerate() {
        let parsed = match entry.as_array().map(Vec::as_slice) {
            Some([Value::String(logical), axes]) => match axes {
                Value::Null => Some(Vec::new()),
                Value::String(axis) => Some(vec![axis.clone()]),
                Value::Array(list) => list
                    .iter()
                    .map(|a| a.as_str().map(str::to_string))
                    .collect(),
                _ => None,
            }
            .map(|axes| LogicalAxisRule(logical.clone(), axes)),
            _ => None,
        };
        match parsed {
            Some(rule) => rules.push(rule),
            None => issues.push(ConfigIssue::Invalid {
                key: format!("{path}[{i}]"),
                expected: ENTRY.into(),
                got: show(entry),
            }),
        }
    }
    (issues.len() == before).then_some(Some(rules))
}
