//! Section `distillation`: teacher, temperature, loss mix and intermediate-layer matching.

use serde::ser::Serializer;
use serde::Serialize;
use serde_json::Value;

use super::checks::Checks;
use super::error::{show, ConfigIssue};
use super::reader::{config_enum, ObjectReader};

config_enum! {
    /// Distance between matched student and teacher hidden states.
    pub enum IntermediateLoss {
        /// Mean squared error (after the learned projection when widths differ).
        #[default]
        Mse => "mse",
        /// 1 - cosine similarity, per token.
        Cosine => "cosine",
    }
}

/// Which teacher layer each student layer is matched to.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum LayerMapping {
    /// Student layer i -> teacher layer round((i + 1) * Lt / Ls) - 1.
    #[default]
    Uniform,
    /// Only the last student layer, matched to the last teacher layer.
    Last,
    /// Teacher layer index for each student layer, in order (one entry per student layer).
    Explicit(Vec<usize>),
}

impl Serialize for LayerMapping {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            LayerMapping::Uniform => serializer.serialize_str("uniform"),
            LayerMapping::Last => serializer.serialize_str("last"),
            LayerMapping::Explicit(layers) => layers.serialize(serializer),
        }
    }
}

/// Section `distillation`: loss = alpha * T^2 * KL(teacher/T || student/T)
/// + (1 - alpha) * CE(labels) + intermediate_weight * intermediate.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DistillationConfig {
    /// A vishwam checkpoint directory or a Hugging Face Llama directory; required by
    /// `vishwam distill`. Default null.
    pub teacher_model: Option<String>,
    /// Softmax temperature T of both models, > 0. Default 2.0.
    pub temperature: f64,
    /// Weight of the KL term, in [0, 1]; 1 - alpha weighs the label cross-entropy. Default 0.5.
    pub alpha: f64,
    /// Also match hidden states of chosen layers. Default false.
    pub use_intermediate_distillation: bool,
    /// "uniform", "last", or one teacher layer index per student layer. Default "uniform".
    pub intermediate_layer_mapping: LayerMapping,
    /// Distance of the intermediate term. Default "mse".
    pub intermediate_loss: IntermediateLoss,
    /// Weight (beta) of the intermediate term, >= 0. Default 1.0.
    pub intermediate_weight: f64,
}

impl Default for DistillationConfig {
    fn default() -> Self {
        DistillationConfig {
            teacher_model: None,
            temperature: 2.0,
            alpha: 0.5,
            use_intermediate_distillation: false,
            intermediate_layer_mapping: LayerMapping::Uniform,
            intermediate_loss: IntermediateLoss::Mse,
            intermediate_weight: 1.0,
        }
    }
}

impl DistillationConfig {
    /// The keys of this section (other than `teacher_model`) set to other values than their
    /// defaults, as `distillation.KEY = VALUE`: settings that only `vishwam distill` (with a
    /// teacher) uses, which `vishwam train` names in a warning.
    pub fn keys_set(&self) -> Vec<String> {
        let (Ok(serde_json::Value::Object(this)), Ok(defaults)) = (
            serde_json::to_value(self),
            serde_json::to_value(DistillationConfig::default()),
        ) else {
            return Vec::new();
        };
        this.iter()
            .filter(|(key, value)| *key != "teacher_model" && defaults.get(key) != Some(value))
            .map(|(key, value)| format!("distillation.{key} = {value}"))
            .collect()
    }

    pub(crate) fn read(&mut self, r: &mut ObjectReader<'_>) {
        r.opt_text("teacher_model", &mut self.teacher_model);
        r.number("temperature", &mut self.temperature);
        r.number("alpha", &mut self.alpha);
        r.flag(
            "use_intermediate_distillation",
            &mut self.use_intermediate_distillation,
        );
        r.custom(
            "intermediate_layer_mapping",
            &mut self.intermediate_layer_mapping,
            read_mapping,
        );
        r.choice("intermediate_loss", &mut self.intermediate_loss);
        r.number("intermediate_weight", &mut self.intermediate_weight);
    }

    /// `student_layers` is `model.num_layers`, the length an explicit mapping must have.
    pub(crate) fn validate(&self, student_layers: usize, c: &mut Checks) {
        if let Some(teacher) = &self.teacher_model {
            c.non_empty("distillation.teacher_model", teacher);
        }
        c.positive_number("distillation.temperature", self.temperature);
        c.in_closed("distillation.alpha", self.alpha, 0.0, 1.0);
        c.non_negative_number("distillation.intermediate_weight", self.intermediate_weight);
        if let LayerMapping::Explicit(layers) = &self.intermediate_layer_mapping {
            c.ensure(
                layers.len() == student_layers,
                "distillation.intermediate_layer_mapping",
                format!("a list of one teacher layer per student layer (model.num_layers = {student_layers})"),
                format!("a list of {} entries", layers.len()),
            );
        }
    }
}

fn read_mapping(value: &Value, path: &str, issues: &mut Vec<ConfigIssue>) -> Option<LayerMapping> {
    let parsed = match value {
        Value::String(s) if s == "uniform" => Some(LayerMapping::Uniform),
        Value::String(s) if s == "last" => Some(LayerMapping::Last),
        Value::Array(items) => items
            .iter()
            .map(|item| item.as_u64().and_then(|n| usize::try_from(n).ok()))
            .collect::<Option<Vec<usize>>>()
            .map(LayerMapping::Explicit),
        _ => None,
    };
    if parsed.is_none() {
        issues.push(ConfigIssue::Invalid {
            key: path.to_string(),
            expected:
                "\"uniform\", \"last\", or a list of teacher layer indices (non-negative integers)"
                    .into(),
            got: show(value),
        });
    }
    parsed
}
