//! Names for what a drop record carries as numbers: the reason (the
//! running kernel's `enum skb_drop_reason`, read from its BTF: the values
//! differ between kernels) and the dropping code's address (a function of
//! `/proc/kallsyms`).

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::sync::Arc;

use icmpmon_core::event::KernelDrop;

/// Addresses resolved and kept; past it, new addresses are named by number.
const MAX_LOCATIONS: usize = 4096;

/// Names for drop records: reasons by value, functions by address.
#[derive(Debug, Default)]
pub(crate) struct DropNames {
    reasons: HashMap<u32, Arc<str>>,
    /// Kernel text symbols, read at start: /proc/kallsyms shows addresses
    /// only to a process with CAP_SYSLOG (or perf rights), which icmpmon
    /// gives up once its source is open.
    symbols: Symbols,
    locations: HashMap<u64, Arc<str>>,
}

/// Text symbols sorted by address: (address, start and end in `names`).
#[derive(Debug, Default)]
struct Symbols {
    by_addr: Vec<(u64, u32, u32)>,
    names: String,
}

impl Symbols {
    fn parse(lines: impl Iterator<Item = String>) -> Self {
        let mut s = Symbols::default();
        for line in lines {
            if let Some((addr, name)) = parse_kallsyms_line(&line) {
                let start = s.names.len();
                s.names.push_str(name);
                let (Ok(a), Ok(b)) = (u32::try_from(start), u32::try_from(s.names.len())) else {
                    break;
                };
                s.by_addr.push((addr, a, b));
            }
        }
        s.by_addr.sort_unstable_by_key(|(a, _, _)| *a);
        s
    }

    /// The function holding `addr`, or the address itself.
    fn name_of(&self, addr: u64) -> Arc<str> {
        match self.by_addr.partition_point(|(a, _, _)| *a <= addr) {
            0 => format!("{addr:#x}").into(),
            i => {
                let (_, a, b) = self.by_addr[i - 1];
                Arc::from(&self.names[a as usize..b as usize])
            }
        }
    }
}

impl DropNames {
    /// The reason names of the running kernel (`SKB_DROP_REASON_` cut off);
    /// without BTF every reason is named by its number.
    pub(crate) fn load() -> Self {
        let reasons = match libbpf_rs::btf::Btf::from_vmlinux() {
            Ok(btf) => reason_names(&btf),
            Err(e) => {
                tracing::warn!("drop reasons will be numbers: reading the kernel's BTF: {e}");
                HashMap::new()
            }
        };
        Self {
            reasons,
            symbols: read_kallsyms(),
            locations: HashMap::new(),
        }
    }

    /// What a drop record's numbers name.
    pub(crate) fn name(&mut self, reason: u32, location: u64) -> KernelDrop {
        let reason = match self.reasons.get(&reason) {
            Some(r) => Arc::clone(r),
            None => {
                let r: Arc<str> = format!("reason-{reason}").into();
                if self.reasons.len() < MAX_LOCATIONS {
                    self.reasons.insert(reason, Arc::clone(&r));
                }
                r
            }
        };
        let function = match self.locations.get(&location) {
            Some(f) => Arc::clone(f),
            None => {
                let f = self.symbols.name_of(location);
                if self.locations.len() < MAX_LOCATIONS {
                    self.locations.insert(location, Arc::clone(&f));
                }
                f
            }
        };
        KernelDrop { reason, function }
    }
}

fn reason_names(btf: &libbpf_rs::btf::Btf<'_>) -> HashMap<u32, Arc<str>> {
    use libbpf_rs::btf::types::Enum;
    let Some(e) = btf.type_by_name::<Enum<'_>>("skb_drop_reason") else {
        return HashMap::new();
    };
    e.iter()
        .filter_map(|m| {
            let name = m.name?.to_str()?;
            let short = name.strip_prefix("SKB_DROP_REASON_").unwrap_or(name);
            Some((u32::try_from(m.value).ok()?, Arc::from(short)))
        })
        .collect()
}

/// Text symbols of `/proc/kallsyms`; none when addresses are hidden
/// (kptr_restrict without CAP_SYSLOG shows zeroes).
fn read_kallsyms() -> Symbols {
    match std::fs::File::open("/proc/kallsyms") {
        Ok(f) => Symbols::parse(BufReader::new(f).lines().map_while(Result::ok)),
        Err(e) => {
            tracing::warn!("drop locations will be addresses: /proc/kallsyms: {e}");
            Symbols::default()
        }
    }
}

/// `ffffffff81000000 T _stext [module]` → a text symbol's address and name.
fn parse_kallsyms_line(line: &str) -> Option<(u64, &str)> {
    let mut it = line.split_ascii_whitespace();
    let addr = u64::from_str_radix(it.next()?, 16).ok()?;
    let kind = it.next()?;
    let name = it.next()?;
    (addr != 0 && matches!(kind, "t" | "T")).then_some((addr, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_names_the_function_it_falls_in() {
        let syms = Symbols::parse(
            [
                "ffffffff81000300 T ip_rcv_finish",
                "ffffffff81000000 T _stext",
                "ffffffff81000100 t nft_do_chain\t[nf_tables]",
                "ffffffff81000200 D some_data",
                "0000000000000000 T hidden",
            ]
            .into_iter()
            .map(String::from),
        );
        assert_eq!(syms.by_addr.len(), 3);
        assert_eq!(&*syms.name_of(0xffffffff81000150), "nft_do_chain");
        // Data symbols are not functions: the text symbol before holds it.
        assert_eq!(&*syms.name_of(0xffffffff81000250), "nft_do_chain");
        assert_eq!(&*syms.name_of(0xffffffff81000300), "ip_rcv_finish");
        assert_eq!(&*syms.name_of(0x10), "0x10");
    }

    #[test]
    fn unknown_reasons_are_numbered() {
        let mut n = DropNames::default();
        let d = n.name(7, 0x1234);
        assert_eq!((&*d.reason, &*d.function), ("reason-7", "0x1234"));
    }
}
