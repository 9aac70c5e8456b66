//! The two tiers a call can be served by.

use serde::{Deserialize, Serialize};

/// The two tiers a call can be served by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    /// The small model: local, or a remote pool.
    Slm,
    /// The large model.
    Llm,
}

impl Tier {
    /// `slm` or `llm`.
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Slm => "slm",
            Tier::Llm => "llm",
        }
    }

    /// The other tier.
    pub fn other(self) -> Tier {
        match self {
            Tier::Slm => Tier::Llm,
            Tier::Llm => Tier::Slm,
        }
    }
}

impl std::fmt::Display for Tier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
