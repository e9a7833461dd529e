//! The standard `process_*` families every Prometheus client library exports (names,
//! types and help as client_golang's process collector), read from `/proc/self` at
//! scrape time. Written by hand: the recorder has no float counter, and a crate for six
//! numbers is not worth it. Anywhere without `/proc` nothing is written.

use std::fmt::Write;

/// `AT_PAGESZ` and `AT_CLKTCK` in the auxiliary vector (`getauxval(3)`).
const AT_PAGESZ: usize = 6;
const AT_CLKTCK: usize = 17;

/// Appends one family with a single unlabelled sample.
pub(super) fn family(out: &mut String, name: &str, help: &str, kind: &str, value: f64) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    let _ = writeln!(out, "{name} {value}");
}

/// Appends the `process_*` families (each only when it could be read).
pub(super) fn render(out: &mut String) {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return;
    };
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    let auxv = std::fs::read("/proc/self/auxv").unwrap_or_default();
    let tick = aux_value(&auxv, AT_CLKTCK)
        .filter(|t| *t > 0)
        .unwrap_or(100) as f64;
    let page = aux_value(&auxv, AT_PAGESZ)
        .filter(|p| *p > 0)
        .unwrap_or(4096) as f64;
    let fds = std::fs::read_dir("/proc/self/fd").map(Iterator::count).ok();
    for (name, help, kind, value) in [
        (
            "process_cpu_seconds_total",
            "Total user and system CPU time spent in seconds.",
            "counter",
            stat_field(&stat, 14)
                .zip(stat_field(&stat, 15))
                .map(|(u, s)| (u + s) as f64 / tick),
        ),
        (
            "process_open_fds",
            "Number of open file descriptors.",
            "gauge",
            fds.map(|n| n as f64),
        ),
        (
            "process_max_fds",
            "Maximum number of open file descriptors.",
            "gauge",
            max_fds(&read("/proc/self/limits")),
        ),
        (
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes.",
            "gauge",
            stat_field(&stat, 23).map(|v| v as f64),
        ),
        (
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
            "gauge",
            stat_field(&stat, 24).map(|pages| pages as f64 * page),
        ),
        (
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds.",
            "gauge",
            boot_time(&read("/proc/stat"))
                .zip(stat_field(&stat, 22))
                .map(|(boot, ticks)| boot as f64 + ticks as f64 / tick),
        ),
    ] {
        if let Some(value) = value {
            family(out, name, help, kind, value);
        }
    }
}

/// Field `n` (1-based, as `proc(5)` numbers them) of `/proc/self/stat`. The command
/// name (field 2) is in parentheses and may hold spaces or parentheses itself, so
/// fields are counted from the last `)`.
fn stat_field(stat: &str, n: usize) -> Option<u64> {
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(n.checked_sub(3)?)?.parse().ok()
}

/// The soft limit of open files from `/proc/self/limits` (`None` when unlimited).
fn max_fds(limits: &str) -> Option<f64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let soft = line["Max open files".len()..].split_whitespace().next()?;
    soft.parse::<u64>().ok().map(|n| n as f64)
}

/// Boot time, Unix seconds, from `/proc/stat`.
fn boot_time(stat: &str) -> Option<u64> {
    stat.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

/// A value of the auxiliary vector: native-endian (key, value) words.
fn aux_value(auxv: &[u8], key: usize) -> Option<usize> {
    const W: usize = std::mem::size_of::<usize>();
    auxv.chunks_exact(2 * W).find_map(|pair| {
        let word = |b: &[u8]| usize::from_ne_bytes(b.try_into().unwrap_or([0; W]));
        (word(&pair[..W]) == key).then(|| word(&pair[W..]))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_files_are_read_field_by_field() {
        // A command name with spaces and parentheses does not shift the fields.
        let stat = "4242 (gc (x) y) S 1 4242 4242 0 -1 4194560 900 0 0 0 \
                    250 50 0 0 20 0 9 0 123456 104857600 2560 18446744073709551615";
        assert_eq!(stat_field(stat, 3), None); // "S" is no number
        assert_eq!(stat_field(stat, 14), Some(250));
        assert_eq!(stat_field(stat, 15), Some(50));
        assert_eq!(stat_field(stat, 22), Some(123_456));
        assert_eq!(stat_field(stat, 23), Some(104_857_600));
        assert_eq!(stat_field(stat, 24), Some(2560));
        assert_eq!(stat_field(stat, 99), None);
        assert_eq!(stat_field("garbage", 14), None);

        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max cpu time              unlimited            unlimited            seconds\n\
                      Max open files            1024                 524288               files\n";
        assert_eq!(max_fds(limits), Some(1024.0));
        assert_eq!(
            max_fds("Max open files            unlimited  unlimited  files"),
            None
        );
        assert_eq!(
            boot_time("cpu  1 2 3\nbtime 1700000000\nprocesses 9\n"),
            Some(1_700_000_000)
        );
        assert_eq!(boot_time(""), None);

        let mut auxv = Vec::new();
        for (k, v) in [(AT_PAGESZ, 16384usize), (AT_CLKTCK, 250), (0, 0)] {
            auxv.extend(k.to_ne_bytes());
            auxv.extend(v.to_ne_bytes());
        }
        assert_eq!(aux_value(&auxv, AT_PAGESZ), Some(16384));
        assert_eq!(aux_value(&auxv, AT_CLKTCK), Some(250));
        assert_eq!(aux_value(&auxv, 99), None);
        assert_eq!(aux_value(&auxv[..7], AT_PAGESZ), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_process_is_described_on_linux() {
        let mut out = String::new();
        render(&mut out);
        for name in [
            "process_cpu_seconds_total",
            "process_open_fds",
            "process_max_fds",
            "process_virtual_memory_bytes",
            "process_resident_memory_bytes",
            "process_start_time_seconds",
        ] {
            assert!(out.contains(&format!("# HELP {name} ")), "{name}: {out}");
            let value: f64 = out
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{name} ")))
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{name}: {out}"));
            assert!(
                value > 0.0 || name == "process_cpu_seconds_total",
                "{name} = {value}"
            );
        }
        let start: f64 = out
            .lines()
            .find_map(|l| l.strip_prefix("process_start_time_seconds "))
            .and_then(|v| v.parse().ok())
            .unwrap_or_default();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        // Started in the last day, not in the future (boot time plus ticks since boot).
        assert!(
            start <= now + 1.0 && start > now - 86_400.0,
            "{start} vs {now}"
        );
    }
}
