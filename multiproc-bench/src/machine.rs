//! The machine description that goes with every report.

use crate::model::Machine;

fn first_line_value(text: &str, key: &str) -> Option<String> {
    text.lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_once(['=', ':']))
        .map(|(_, v)| v.trim().trim_matches('"').to_string())
}

fn kernel() -> String {
    // SAFETY: utsname is plain data; all zeros is valid.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: `u` is a valid out-pointer.
    if unsafe { libc::uname(&mut u) } != 0 {
        return "unknown".into();
    }
    let bytes: Vec<u8> = u
        .release
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Describes this machine; `pinned` are the CPUs the run uses.
pub fn describe(allowed: &[usize], pinned: Option<[usize; 2]>) -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let os = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
    Machine {
        cpu_model: first_line_value(&cpuinfo, "model name").unwrap_or_else(|| "unknown".into()),
        // SAFETY: sysconf only reads a value.
        logical_cpus: unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }.max(1) as usize,
        allowed_cpus: allowed.to_vec(),
        pinned,
        kernel: kernel(),
        os: first_line_value(&os, "PRETTY_NAME").unwrap_or_else(|| "unknown".into()),
        memory_bytes: first_line_value(&meminfo, "MemTotal")
            .and_then(|v| v.trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024),
        python: None,
    }
}
