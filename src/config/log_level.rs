//! `[log] level` (and `RUST_LOG`) as an operator writes it, read into the `tracing`
//! filter it means. `check` refuses what this refuses; logging starts with what it gives.

use tracing_subscriber::EnvFilter;

/// The level names a filter may use.
const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];

/// Reads a log level or filter as an operator writes it, into the `tracing` filter it
/// means: `warn`, `info`, or comma-separated `target=level` directives
/// (`genesys_closer=debug,info`). Level names are case-blind; `warning` is taken as
/// `warn`. A word that is neither a level nor `target=level` is an error: `tracing`
/// alone would read `warning` or `verbose` as a target name and log nothing at all.
pub fn parse_level(text: &str) -> Result<String, String> {
    let level = |word: &str| -> Option<&'static str> {
        let w = word.trim().to_ascii_lowercase();
        let w = if w == "warning" {
            "warn".to_string()
        } else {
            w
        };
        LEVELS.iter().copied().find(|l| *l == w)
    };
    let mut out = Vec::new();
    for directive in text.split(',').map(str::trim) {
        if directive.is_empty() {
            continue;
        }
        let normal = match directive.split_once('=') {
            Some((target, lvl)) if !target.trim().is_empty() => match level(lvl) {
                Some(l) => format!("{}={l}", target.trim()),
                None => {
                    return Err(format!(
                        "`{directive}`: `{}` is not a level ({})",
                        lvl.trim(),
                        LEVELS.join(", ")
                    ));
                }
            },
            Some(_) => return Err(format!("`{directive}` names no target before `=`")),
            None => match level(directive) {
                Some(l) => l.to_string(),
                None => {
                    return Err(format!(
                        "`{directive}` is not a level ({}, or `warning`) nor `target=level`",
                        LEVELS.join(", ")
                    ));
                }
            },
        };
        out.push(normal);
    }
    if out.is_empty() {
        return Err("no level given".into());
    }
    let filter = out.join(",");
    EnvFilter::try_new(&filter).map_err(|e| format!("`{text}` is not a log filter: {e}"))?;
    Ok(filter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_as_operators_write_them() {
        assert_eq!(parse_level("warning").as_deref(), Ok("warn"));
        assert_eq!(parse_level("WARN").as_deref(), Ok("warn"));
        assert_eq!(parse_level(" Info ").as_deref(), Ok("info"));
        assert_eq!(
            parse_level("genesys_closer=debug,info").as_deref(),
            Ok("genesys_closer=debug,info")
        );
        assert_eq!(
            parse_level("genesys_closer=Warning").as_deref(),
            Ok("genesys_closer=warn")
        );
        // `tracing` alone reads these as target names and logs nothing.
        for bad in [
            "verbose",
            "warnings",
            "genesys_closer",
            "x=loud",
            "=info",
            "",
            ",",
        ] {
            assert!(parse_level(bad).is_err(), "{bad:?} accepted");
        }
        assert!(
            parse_level("verbose")
                .unwrap_err()
                .contains("trace, debug, info, warn, error, off")
        );
    }
}
