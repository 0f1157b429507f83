//! Reads the kernel's ICMP counters and the sysctls that silence ICMP
//! (core's `aggregate::kernel` keeps and judges them). Everything is per
//! network namespace: these are the counters of icmpmon's own.

use icmpmon_core::aggregate::{KernelSample, SYSCTLS};

/// One reading; a file this kernel lacks (no IPv6) leaves its part out.
pub(super) fn sample() -> KernelSample {
    let mut s = KernelSample {
        ts_ns: icmpmon_core::event::now_ns(),
        ..KernelSample::default()
    };
    for path in ["/proc/net/snmp", "/proc/net/netstat"] {
        if let Ok(t) = std::fs::read_to_string(path) {
            s.add_pairs(&t);
        }
    }
    if let Ok(t) = std::fs::read_to_string("/proc/net/snmp6") {
        s.add_snmp6(&t);
    }
    for name in SYSCTLS {
        let path = format!("/proc/sys/{}", name.replace('.', "/"));
        if let Ok(v) = std::fs::read_to_string(path) {
            s.set_sysctl(name, &v);
        }
    }
    s
}
