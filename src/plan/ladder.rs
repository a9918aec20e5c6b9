//! The candidate model shapes of a plan, smallest first, and the rules that go with a shape
//! (grouped-query heads, learning rate) or a budget (the Pufferfish tier).

use crate::config::Config;

/// One shape of the model ladder: the Pufferfish tiers (1 x 64 up to 30 x 768) and larger
/// shapes for big devices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelShape {
    /// Blocks.
    pub layers: usize,
    /// Hidden width.
    pub width: usize,
    /// Query heads.
    pub heads: usize,
    /// Training context in tokens.
    pub context: usize,
}

const fn shape(layers: usize, width: usize, heads: usize, context: usize) -> ModelShape {
    ModelShape {
        layers,
        width,
        heads,
        context,
    }
}

/// The candidate shapes, smallest first.
pub const LADDER: &[ModelShape] = &[
    shape(1, 64, 4, 64),
    shape(2, 128, 4, 128),
    shape(4, 256, 8, 128),
    shape(6, 384, 6, 256),
    shape(8, 512, 8, 256),
    shape(12, 512, 8, 512),
    shape(12, 768, 12, 512),
    shape(24, 768, 12, 1024),
    shape(30, 768, 16, 1024),
    shape(24, 1024, 16, 1024),
    shape(24, 1536, 16, 2048),
    shape(24, 2048, 16, 2048),
];

impl ModelShape {
    /// KV heads: a quarter of the query heads where they divide (grouped-query attention,
    /// as Pufferfish), else a third or a half.
    pub fn kv_heads(&self) -> usize {
        [4, 3, 2]
            .iter()
            .find(|g| self.heads.is_multiple_of(**g) && self.heads / **g >= 1)
            .map_or(self.heads, |g| self.heads / g)
    }

    /// `base` with this shape (vocabulary, data and the rest kept).
    pub fn apply(&self, base: &Config) -> Config {
        let mut cfg = base.clone();
        let m = &mut cfg.model;
        m.num_layers = self.layers;
        m.hidden_dim = self.width;
        m.num_heads = self.heads;
        m.num_kv_heads = Some(self.kv_heads());
        m.head_dim = None;
        m.mlp_dim = None;
        m.max_seq_len = self.context;
        cfg.sequence.max_length = None;
        cfg
    }
}

/// The Pufferfish tier of a time budget.
pub fn tier(hours: f64) -> &'static str {
    match hours {
        h if h < 0.01 => "ultra-fast (< 0.01 h)",
        h if h < 0.5 => "quick dev (0.01-0.5 h)",
        h if h < 3.0 => "standard (0.5-3 h)",
        _ => "extended (3 h+)",
    }
}

/// Peak learning rate by width (smaller models take larger steps; 6e-4 at 768 as GPT-2 small).
pub fn learning_rate(width: usize) -> f64 {
    match width {
        w if w <= 256 => 1e-3,
        w if w <= 512 => 8e-4,
        w if w <= 768 => 6e-4,
        _ => 3e-4,
    }
}
