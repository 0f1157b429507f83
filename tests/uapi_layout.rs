//! The Rust mirror (src/proto.rs) must match kmod-hook/include/uapi/icmpmon.h:
//! compile a C program against the header with the system C compiler (found
//! by the `cc` crate) and compare every size, offset and constant it prints.

use std::collections::BTreeMap;
use std::mem::{offset_of, size_of};
use std::path::Path;
use std::process::Command;

use icmpmon_capture::kmod::abi::{self as proto, attr, cmd, IcmpmonRec};

const PROBE: &str = r#"
#include <stddef.h>
#include <stdio.h>
#include "icmpmon.h"
#define P(name, value) printf("%s %llu\n", name, (unsigned long long)(value))
#define C(x) P(#x, x)
#define OFF(f) P("off_" #f, offsetof(struct icmpmon_rec, f))
#define SZ(f) P("size_" #f, sizeof(((struct icmpmon_rec *)0)->f))
int main(void)
{
	P("sizeof_rec", sizeof(struct icmpmon_rec));
	P("alignof_rec", _Alignof(struct icmpmon_rec));
	OFF(hdr_len); OFF(caplen); OFF(origlen); OFF(ifindex); OFF(family);
	OFF(hook); OFF(flags); OFF(reserved); OFF(ts_real_ns); OFF(ts_mono_ns);
	SZ(hdr_len); SZ(caplen); SZ(origlen); SZ(ifindex); SZ(family);
	SZ(hook); SZ(flags); SZ(reserved); SZ(ts_real_ns); SZ(ts_mono_ns);
	C(ICMPMON_GENL_VERSION);
	C(ICMPMON_CMD_REGISTER); C(ICMPMON_CMD_CLOSE); C(ICMPMON_CMD_RECORDS);
	C(ICMPMON_CMD_STATS); C(ICMPMON_CMD_BYE); C(ICMPMON_CMD_MAX);
	C(ICMPMON_A_HOOK_MASK); C(ICMPMON_A_FAMILY_MASK); C(ICMPMON_A_SNAPLEN);
	C(ICMPMON_A_BATCH_BYTES); C(ICMPMON_A_FLUSH_MS); C(ICMPMON_A_SEQ);
	C(ICMPMON_A_LOST); C(ICMPMON_A_RECORDS); C(ICMPMON_A_BYE_REASON);
	C(ICMPMON_A_STAT_PACKETS); C(ICMPMON_A_STAT_SEEN); C(ICMPMON_A_STAT_DELIVERED);
	C(ICMPMON_A_STAT_LOST_NOBUFS); C(ICMPMON_A_STAT_LOST_NOMEM);
	C(ICMPMON_A_STAT_LOST_CLOSED); C(ICMPMON_A_STAT_TRUNCATED);
	C(ICMPMON_A_STAT_SUBSCRIBERS); C(ICMPMON_A_PAD);
	C(ICMPMON_A_STAT_LOST_OTHER); C(ICMPMON_A_STAT_SUBSCRIBED); C(ICMPMON_A_SEEN);
	C(ICMPMON_A_MAX);
	C(ICMPMON_HOOK_PRE_ROUTING); C(ICMPMON_HOOK_LOCAL_OUT);
	C(ICMPMON_HOOK_F_PRE_ROUTING); C(ICMPMON_HOOK_F_LOCAL_OUT);
	C(ICMPMON_FAMILY_F_IPV4); C(ICMPMON_FAMILY_F_IPV6);
	C(ICMPMON_BYE_UNLOAD);
	C(ICMPMON_SNAPLEN_MIN); C(ICMPMON_SNAPLEN_MAX); C(ICMPMON_SNAPLEN_DEFAULT);
	C(ICMPMON_BATCH_BYTES_MIN); C(ICMPMON_BATCH_BYTES_MAX); C(ICMPMON_BATCH_BYTES_DEFAULT);
	C(ICMPMON_FLUSH_MS_MIN); C(ICMPMON_FLUSH_MS_MAX); C(ICMPMON_FLUSH_MS_DEFAULT);
	C(ICMPMON_REC_FAMILY_IPV4); C(ICMPMON_REC_FAMILY_IPV6); C(ICMPMON_REC_F_TRUNCATED);
	C(ICMPMON_REC_HDR_LEN_V2); C(ICMPMON_REC_ALIGN);
	C(ICMPMON_HOOK_DROP); C(ICMPMON_REC_HDR_LEN_DROP);
	P("sizeof_rec_drop", sizeof(struct icmpmon_rec_drop));
	P("off_drop_reason", offsetof(struct icmpmon_rec_drop, reason));
	P("off_drop_location", offsetof(struct icmpmon_rec_drop, location));
	printf("name %s\n", ICMPMON_GENL_NAME);
	return 0;
}
"#;

fn c_values() -> (BTreeMap<String, u64>, String) {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("probe.c");
    let exe = dir.path().join("probe");
    std::fs::write(&src, PROBE).unwrap();
    let target = "x86_64-unknown-linux-gnu";
    let compiler = cc::Build::new()
        .target(target)
        .host(target)
        .opt_level(0)
        .cargo_metadata(false)
        .get_compiler();
    let include = Path::new(env!("CARGO_MANIFEST_DIR")).join("kmod-hook/include/uapi");
    let status = compiler
        .to_command()
        .args(["-Wall", "-Werror", "-o"])
        .arg(&exe)
        .arg("-I")
        .arg(&include)
        .arg(&src)
        .status()
        .expect("run the C compiler");
    assert!(
        status.success(),
        "the probe against icmpmon.h did not compile"
    );
    let out = Command::new(&exe).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let mut values = BTreeMap::new();
    let mut name = String::new();
    for line in text.lines() {
        let (k, v) = line.split_once(' ').unwrap();
        if k == "name" {
            name = v.to_owned();
        } else {
            values.insert(k.to_owned(), v.parse().unwrap());
        }
    }
    (values, name)
}

#[test]
fn rust_mirror_matches_c_header() {
    let (c, name) = c_values();
    assert_eq!(name, proto::GENL_NAME);
    let rust: Vec<(&str, u64)> = vec![
        ("sizeof_rec", size_of::<IcmpmonRec>() as u64),
        ("alignof_rec", std::mem::align_of::<IcmpmonRec>() as u64),
        ("off_hdr_len", offset_of!(IcmpmonRec, hdr_len) as u64),
        ("off_caplen", offset_of!(IcmpmonRec, caplen) as u64),
        ("off_origlen", offset_of!(IcmpmonRec, origlen) as u64),
        ("off_ifindex", offset_of!(IcmpmonRec, ifindex) as u64),
        ("off_family", offset_of!(IcmpmonRec, family) as u64),
        ("off_hook", offset_of!(IcmpmonRec, hook) as u64),
        ("off_flags", offset_of!(IcmpmonRec, flags) as u64),
        ("off_reserved", offset_of!(IcmpmonRec, reserved) as u64),
        ("off_ts_real_ns", offset_of!(IcmpmonRec, ts_real_ns) as u64),
        ("off_ts_mono_ns", offset_of!(IcmpmonRec, ts_mono_ns) as u64),
        ("size_hdr_len", 2),
        ("size_caplen", 2),
        ("size_origlen", 4),
        ("size_ifindex", 4),
        ("size_family", 1),
        ("size_hook", 1),
        ("size_flags", 1),
        ("size_reserved", 1),
        ("size_ts_real_ns", 8),
        ("size_ts_mono_ns", 8),
        ("ICMPMON_GENL_VERSION", proto::GENL_VERSION.into()),
        ("ICMPMON_CMD_REGISTER", cmd::REGISTER.into()),
        ("ICMPMON_CMD_CLOSE", cmd::CLOSE.into()),
        ("ICMPMON_CMD_RECORDS", cmd::RECORDS.into()),
        ("ICMPMON_CMD_STATS", cmd::STATS.into()),
        ("ICMPMON_CMD_BYE", cmd::BYE.into()),
        ("ICMPMON_CMD_MAX", cmd::MAX.into()),
        ("ICMPMON_A_HOOK_MASK", attr::HOOK_MASK.into()),
        ("ICMPMON_A_FAMILY_MASK", attr::FAMILY_MASK.into()),
        ("ICMPMON_A_SNAPLEN", attr::SNAPLEN.into()),
        ("ICMPMON_A_BATCH_BYTES", attr::BATCH_BYTES.into()),
        ("ICMPMON_A_FLUSH_MS", attr::FLUSH_MS.into()),
        ("ICMPMON_A_SEQ", attr::SEQ.into()),
        ("ICMPMON_A_LOST", attr::LOST.into()),
        ("ICMPMON_A_RECORDS", attr::RECORDS.into()),
        ("ICMPMON_A_BYE_REASON", attr::BYE_REASON.into()),
        ("ICMPMON_A_STAT_PACKETS", attr::STAT_PACKETS.into()),
        ("ICMPMON_A_STAT_SEEN", attr::STAT_SEEN.into()),
        ("ICMPMON_A_STAT_DELIVERED", attr::STAT_DELIVERED.into()),
        ("ICMPMON_A_STAT_LOST_NOBUFS", attr::STAT_LOST_NOBUFS.into()),
        ("ICMPMON_A_STAT_LOST_NOMEM", attr::STAT_LOST_NOMEM.into()),
        ("ICMPMON_A_STAT_LOST_CLOSED", attr::STAT_LOST_CLOSED.into()),
        ("ICMPMON_A_STAT_TRUNCATED", attr::STAT_TRUNCATED.into()),
        ("ICMPMON_A_STAT_SUBSCRIBERS", attr::STAT_SUBSCRIBERS.into()),
        ("ICMPMON_A_PAD", attr::PAD.into()),
        ("ICMPMON_A_STAT_LOST_OTHER", attr::STAT_LOST_OTHER.into()),
        ("ICMPMON_A_STAT_SUBSCRIBED", attr::STAT_SUBSCRIBED.into()),
        ("ICMPMON_A_SEEN", attr::SEEN.into()),
        ("ICMPMON_A_MAX", attr::MAX.into()),
        ("ICMPMON_HOOK_PRE_ROUTING", proto::HOOK_PRE_ROUTING.into()),
        ("ICMPMON_HOOK_LOCAL_OUT", proto::HOOK_LOCAL_OUT.into()),
        (
            "ICMPMON_HOOK_F_PRE_ROUTING",
            proto::HOOK_F_PRE_ROUTING.into(),
        ),
        ("ICMPMON_HOOK_F_LOCAL_OUT", proto::HOOK_F_LOCAL_OUT.into()),
        ("ICMPMON_FAMILY_F_IPV4", proto::FAMILY_F_IPV4.into()),
        ("ICMPMON_FAMILY_F_IPV6", proto::FAMILY_F_IPV6.into()),
        ("ICMPMON_BYE_UNLOAD", proto::BYE_UNLOAD.into()),
        ("ICMPMON_SNAPLEN_MIN", proto::SNAPLEN_MIN.into()),
        ("ICMPMON_SNAPLEN_MAX", proto::SNAPLEN_MAX.into()),
        ("ICMPMON_SNAPLEN_DEFAULT", proto::SNAPLEN_DEFAULT.into()),
        ("ICMPMON_BATCH_BYTES_MIN", proto::BATCH_BYTES_MIN.into()),
        ("ICMPMON_BATCH_BYTES_MAX", proto::BATCH_BYTES_MAX.into()),
        (
            "ICMPMON_BATCH_BYTES_DEFAULT",
            proto::BATCH_BYTES_DEFAULT.into(),
        ),
        ("ICMPMON_FLUSH_MS_MIN", proto::FLUSH_MS_MIN.into()),
        ("ICMPMON_FLUSH_MS_MAX", proto::FLUSH_MS_MAX.into()),
        ("ICMPMON_FLUSH_MS_DEFAULT", proto::FLUSH_MS_DEFAULT.into()),
        ("ICMPMON_REC_FAMILY_IPV4", proto::REC_FAMILY_IPV4.into()),
        ("ICMPMON_REC_FAMILY_IPV6", proto::REC_FAMILY_IPV6.into()),
        ("ICMPMON_REC_F_TRUNCATED", proto::REC_F_TRUNCATED.into()),
        ("ICMPMON_REC_HDR_LEN_V2", proto::REC_HDR_LEN_V2.into()),
        ("ICMPMON_HOOK_DROP", proto::HOOK_DROP.into()),
        ("ICMPMON_REC_HDR_LEN_DROP", proto::REC_HDR_LEN_DROP.into()),
        ("sizeof_rec_drop", proto::REC_HDR_LEN_DROP.into()),
        ("off_drop_reason", proto::DropFields::REASON_OFFSET as u64),
        (
            "off_drop_location",
            proto::DropFields::LOCATION_OFFSET as u64,
        ),
        ("ICMPMON_REC_ALIGN", proto::REC_ALIGN as u64),
    ];
    for (name, value) in &rust {
        assert_eq!(c.get(*name), Some(value), "{name}: C header vs Rust mirror");
    }
    assert_eq!(
        c.len(),
        rust.len(),
        "the probe prints a value the test does not check"
    );
}

#[test]
fn record_read_matches_c_layout() {
    // IcmpmonRec::read decodes the bytes of a struct laid out by C rules.
    let rec = IcmpmonRec {
        hdr_len: proto::REC_HDR_LEN_V2,
        caplen: 84,
        origlen: 70_000,
        ifindex: 7,
        family: 6,
        hook: 1,
        flags: 1,
        reserved: 0,
        ts_real_ns: 0x0102030405060708,
        ts_mono_ns: 0x1112131415161718,
    };
    let mut bytes = Vec::new();
    rec.write(&mut bytes);
    assert_eq!(bytes.len(), IcmpmonRec::SIZE);
    assert_eq!(IcmpmonRec::SIZE % proto::REC_ALIGN, 0);
    assert_eq!(IcmpmonRec::read(&bytes), Some(rec));
}
