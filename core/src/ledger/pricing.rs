//! What a tier costs: per token (remote APIs), or by measured busy time on your own hardware.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// What a tier costs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Pricing {
    /// Per million tokens, as remote APIs bill.
    PerToken {
        input_usd_per_million: f64,
        output_usd_per_million: f64,
        /// An energy estimate per token, if known; remote providers do not publish one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        joules_per_token: Option<f64>,
    },
    /// Measured busy time on your own hardware, turned into energy and money.
    Energy {
        /// Power drawn by the device while busy. Default 65 W: a typical desktop CPU's TDP.
        device_watts: f64,
        /// Power-supply efficiency. Default 0.85: an 80 PLUS Bronze unit near half load;
        /// consumer supplies run at 80-85%.
        psu_efficiency: f64,
        /// Facility overhead. Default 1.0 (a home or office: no cooling plant); about 1.1 for a
        /// modern datacenter.
        pue: f64,
        /// Share of the device's powered time that does useful work. Default 1.0 counts busy
        /// time only; set 0.05-0.10 to charge a consumer machine's idle time to its requests.
        utilisation: f64,
        /// Default $0.17/kWh: about the 2024 US residential average (US EIA).
        usd_per_kwh: f64,
    },
}

impl Pricing {
    /// OpenAI's published gpt-4o list price: $2.50 per million input tokens, $10.00 per million
    /// output tokens.
    pub fn gpt_4o() -> Self {
        Pricing::PerToken { input_usd_per_million: 2.5, output_usd_per_million: 10.0, joules_per_token: None }
    }

    /// Local hardware with the documented defaults.
    pub fn local_default() -> Self {
        Pricing::Energy { device_watts: 65.0, psu_efficiency: 0.85, pue: 1.0, utilisation: 1.0, usd_per_kwh: 0.17 }
    }

    /// Checks that every figure is finite and in range.
    ///
    /// # Errors
    /// [`Error::Config`] naming the bad figure.
    pub fn validate(&self) -> Result<()> {
        let check = |name: &str, value: f64, positive: bool| {
            if !value.is_finite() || value < 0.0 || (positive && value == 0.0) {
                Err(Error::Config(format!(
                    "pricing {name} must be a finite {} number, got {value}",
                    if positive { "positive" } else { "non-negative" }
                )))
            } else {
                Ok(())
            }
        };
        match self {
            Pricing::PerToken { input_usd_per_million, output_usd_per_million, joules_per_token } => {
                check("input_usd_per_million", *input_usd_per_million, false)?;
                check("output_usd_per_million", *output_usd_per_million, false)?;
                joules_per_token.map_or(Ok(()), |joules| check("joules_per_token", joules, false))
            }
            Pricing::Energy { device_watts, psu_efficiency, pue, utilisation, usd_per_kwh } => {
                check("device_watts", *device_watts, false)?;
                check("psu_efficiency", *psu_efficiency, true)?;
                check("pue", *pue, true)?;
                check("utilisation", *utilisation, true)?;
                check("usd_per_kwh", *usd_per_kwh, false)?;
                if *psu_efficiency > 1.0 || *utilisation > 1.0 || *pue < 1.0 {
                    return Err(Error::Config(
                        "psu_efficiency and utilisation must be at most 1, pue at least 1".into(),
                    ));
                }
                Ok(())
            }
        }
    }

    /// Cost in dollars and energy in joules of one attempt.
    pub fn price(&self, prompt_tokens: u32, completion_tokens: u32, busy: Duration) -> (f64, Option<f64>) {
        match self {
            Pricing::PerToken { input_usd_per_million, output_usd_per_million, joules_per_token } => {
                let cost = (f64::from(prompt_tokens) * input_usd_per_million
                    + f64::from(completion_tokens) * output_usd_per_million)
                    / 1e6;
                let energy = joules_per_token.map(|joules| joules * f64::from(prompt_tokens + completion_tokens));
                (cost, energy)
            }
            Pricing::Energy { device_watts, psu_efficiency, pue, utilisation, usd_per_kwh } => {
                let joules = busy.as_secs_f64() * device_watts / psu_efficiency * pue / utilisation;
                (joules / 3.6e6 * usd_per_kwh, Some(joules))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;

    #[test]
    fn energy_pricing_follows_the_documented_formula() {
        let pricing =
            Pricing::Energy { device_watts: 100.0, psu_efficiency: 0.8, pue: 1.1, utilisation: 0.5, usd_per_kwh: 0.2 };
        let (cost, energy) = pricing.price(0, 0, Duration::from_secs(36));
        // 36 s × 100 W / 0.8 × 1.1 / 0.5 = 9,900 J = 0.00275 kWh → $0.00055.
        assert!((energy.unwrap() - 9_900.0).abs() < 1e-9);
        assert!((cost - 0.00055).abs() < 1e-12);
        let (cost, energy) = Pricing::gpt_4o().price(1_000_000, 500_000, Duration::ZERO);
        assert!((cost - 7.5).abs() < 1e-12);
        assert_eq!(energy, None);
    }

    #[test]
    fn bad_pricing_is_a_config_error() {
        let bad = Pricing::Energy {
            device_watts: f64::NAN,
            psu_efficiency: 0.85,
            pue: 1.0,
            utilisation: 1.0,
            usd_per_kwh: 0.1,
        };
        assert!(matches!(bad.validate(), Err(Error::Config(_))));
        let bad =
            Pricing::Energy { device_watts: 50.0, psu_efficiency: 1.5, pue: 1.0, utilisation: 1.0, usd_per_kwh: 0.1 };
        assert!(bad.validate().is_err());
        assert!(Pricing::local_default().validate().is_ok());
    }
}
