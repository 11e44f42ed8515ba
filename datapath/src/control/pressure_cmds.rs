//! Table-pressure commands (ferrovs's own; OVS has no equivalent):
//!
//! - `ct-get-pressure`: the thresholds and early-drop policy
//!   ([`ct::pressure::PressureConfig`]), whether the table is under
//!   pressure now, how many pressure episodes began, and the current fill
//!   (connections out of `max_conns`).
//! - `ct-set-pressure [high=N] [low=N] [embryonic=SECS]
//!   [evict-assured=on|off]`: change some of them; the others keep their
//!   values. Every token is checked, and the result validated
//!   ([`ct::pressure::PressureConfig::validate`]), before anything changes.
//!
//! The same settings are the `conntrack.pressure` section of the daemon's
//! configuration (`high_pct`, `low_pct`, `embryonic_secs`, `evict_assured`).

use ct::pressure::PressureConfig;
use parking_lot::Mutex;
use serde_json::json;

use super::commands::{no_args, CmdOutput};
use crate::daemon::Daemon;

/// The command's keys with the configuration field each sets.
const KEYS: [(&str, &str); 4] = [
    ("high", "high_pct"),
    ("low", "low_pct"),
    ("embryonic", "embryonic_secs"),
    ("evict-assured", "evict_assured"),
];

/// Apply `KEY=VALUE` tokens to `cfg` and validate the result; the error
/// names the offending token.
pub fn apply_settings(cfg: &mut PressureConfig, args: &[String]) -> Result<(), String> {
    if args.is_empty() {
        return Err(
            "ct-set-pressure: expected [high=N] [low=N] [embryonic=SECS] [evict-assured=on|off]"
                .into(),
        );
    }
    let mut seen: Vec<&str> = Vec::new();
    for tok in args {
        let Some((k, v)) = tok.split_once('=') else {
            return Err(format!("'{tok}': expected KEY=VALUE"));
        };
        if seen.contains(&k) {
            return Err(format!("'{tok}': {k} given twice"));
        }
        let pct = || -> Result<u8, String> {
            v.parse::<u8>()
                .ok()
                .filter(|p| *p <= 100)
                .ok_or_else(|| format!("'{tok}': expected a percentage 0..=100"))
        };
        match k {
            "high" => cfg.high_pct = pct()?,
            "low" => cfg.low_pct = pct()?,
            "embryonic" => {
                cfg.embryonic_secs = v
                    .parse()
                    .map_err(|_| format!("'{tok}': expected a number of seconds"))?
            }
            "evict-assured" => {
                cfg.evict_assured = match v {
                    "on" => true,
                    "off" => false,
                    _ => return Err(format!("'{tok}': expected on or off")),
                }
            }
            _ => {
                return Err(format!(
                    "'{tok}': unknown setting (high, low, embryonic, evict-assured)"
                ))
            }
        }
        seen.push(k);
    }
    cfg.validate().map_err(|e| {
        // Blame the first token that set a field the message names (for
        // low > high, whichever of the two came first).
        let culprit = args.iter().find(|tok| {
            KEYS.iter().any(|(key, field)| {
                tok.split_once('=').is_some_and(|(k, _)| k == *key) && e.contains(field)
            })
        });
        match culprit {
            Some(tok) => format!("'{tok}': {e}"),
            None => e,
        }
    })
}

/// Serialises read-modify-write of the settings by concurrent clients.
static SETTING: Mutex<()> = Mutex::new(());

fn on_off(b: bool) -> &'static str {
    if b {
        "on"
    } else {
        "off"
    }
}

/// `ct-get-pressure`.
pub fn get(d: &Daemon, args: &[String]) -> Result<CmdOutput, String> {
    no_args(args)?;
    let ct = &d.sw.ct;
    let st = ct.pressure_status();
    let (count, max) = (ct.len() as u64, ct.max_conns());
    let fill = if max == 0 {
        0.0
    } else {
        100.0 * count as f64 / max as f64
    };
    let c = &st.config;
    let text = format!(
        "high={}% low={}% embryonic={}s evict-assured={}\n\
         under pressure: {} (episodes: {})\n\
         connections: {count}/{max} ({fill:.1}%)\n",
        c.high_pct,
        c.low_pct,
        c.embryonic_secs,
        on_off(c.evict_assured),
        if st.under_pressure { "yes" } else { "no" },
        st.episodes,
    );
    let json = json!({
        "config": c,
        "under_pressure": st.under_pressure,
        "episodes": st.episodes,
        "connections": count,
        "max_conns": max,
        "fill_pct": fill,
    });
    Ok(CmdOutput::new(text, json))
}

/// `ct-set-pressure [high=N] [low=N] [embryonic=SECS] [evict-assured=on|off]`.
pub fn set(d: &Daemon, args: &[String]) -> Result<CmdOutput, String> {
    let _serial = SETTING.lock();
    let mut cfg = d.sw.ct.pressure_status().config;
    apply_settings(&mut cfg, args)?;
    d.sw.ct.set_pressure(&cfg)?;
    tracing::info!(
        "conntrack pressure: high={}% low={}% embryonic={}s evict-assured={}",
        cfg.high_pct,
        cfg.low_pct,
        cfg.embryonic_secs,
        on_off(cfg.evict_assured)
    );
    Ok(CmdOutput::new("", json!({ "config": cfg })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    fn apply(v: &[&str]) -> Result<PressureConfig, String> {
        let mut c = PressureConfig::default();
        apply_settings(&mut c, &s(v)).map(|_| c)
    }

    #[test]
    fn partial_updates_keep_the_other_fields() {
        let c = apply(&["high=95"]).unwrap();
        assert_eq!(
            c,
            PressureConfig {
                high_pct: 95,
                ..Default::default()
            }
        );
        let c = apply(&["evict-assured=on", "embryonic=2", "low=50", "high=60"]).unwrap();
        assert_eq!(
            (c.high_pct, c.low_pct, c.embryonic_secs, c.evict_assured),
            (60, 50, 2, true)
        );
        let mut c = c;
        apply_settings(&mut c, &s(&["evict-assured=off"])).unwrap();
        assert_eq!((c.high_pct, c.evict_assured), (60, false));
    }

    #[test]
    fn errors_name_the_token() {
        for (args, want) in [
            (&["high"][..], "'high': expected KEY=VALUE"),
            (&["hihg=90"][..], "'hihg=90': unknown setting"),
            (&["high=abc"][..], "'high=abc'"),
            (&["high=101"][..], "'high=101'"),
            (&["low=-1"][..], "'low=-1'"),
            (&["embryonic=5s"][..], "'embryonic=5s'"),
            (
                &["evict-assured=yes"][..],
                "'evict-assured=yes': expected on or off",
            ),
            (&["high=90", "high=91"][..], "'high=91': high given twice"),
            (&["high=0"][..], "'high=0': high_pct=0"),
            (&["embryonic=0"][..], "'embryonic=0': embryonic_secs=0"),
            // low above the current high, and high below the current low.
            (
                &["low=95"][..],
                "'low=95': low_pct=95: must not exceed high_pct=90",
            ),
            (
                &["high=70"][..],
                "'high=70': low_pct=80: must not exceed high_pct=70",
            ),
        ] {
            let e = apply(args).unwrap_err();
            assert!(e.contains(want), "{args:?}: {e}");
        }
        assert!(apply(&[]).is_err());
    }
}
