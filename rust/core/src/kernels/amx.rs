//! AMX-INT8 kernel for the int8 pre-scores: `tdpbusd` multiplies a 16 x 64-byte tile of
//! unsigned query bytes by a 16 x 64-byte tile of signed corpus bytes (16 rows x 4 bytes per
//! tile row: exactly one depth chunk of a `[group][NR][GROUP]` corpus panel) into a 16 x 16
//! tile of i32 sums: 16,384 byte products per instruction, about 12 times the rate of
//! AVX-512 VNNI on the cores measured (see docs/performance.md). Integer sums: the result is
//! the scalar reference's, exactly.
//!
//! Stable Rust has no AMX intrinsics, so the instructions are written as inline assembly. The
//! compiler never allocates tile registers itself (no function here enables an AMX target
//! feature), so tile state survives between the `asm!` blocks of one call.

use std::arch::asm;

use super::{AMX_DEPTH, AMX_ROWS, GROUP, NR};

/// Tile palette 1 with tiles 0-7 of 16 rows x 64 bytes: `tmm0`-`tmm3` the four i32
/// accumulators (16 x 16), `tmm4`/`tmm5` two query tiles, `tmm6`/`tmm7` two corpus tiles.
#[repr(C, align(64))]
struct TileConfig([u8; 64]);

impl TileConfig {
    fn square() -> Self {
        let mut bytes = [0u8; 64];
        bytes[0] = 1; // palette 1
        for t in 0..8 {
            let colsb = (AMX_DEPTH as u16).to_le_bytes();
            bytes[16 + 2 * t..18 + 2 * t].copy_from_slice(&colsb);
            bytes[48 + t] = AMX_ROWS as u8;
        }
        TileConfig(bytes)
    }
}

/// Whether this process may run AMX-INT8: the CPU has AMX-TILE and AMX-INT8 (CPUID leaf 7),
/// the OS saves tile state (XCR0 bits 17-18), and, on Linux, the kernel granted this process
/// the tile data state (`arch_prctl(ARCH_REQ_XCOMP_PERM)`; refused, every tile instruction
/// would fault). Asked once; the permission is the whole process's, every thread's.
pub(super) fn request() -> bool {
    let leaf1 = std::arch::x86_64::__cpuid(1);
    let os_saves_state = leaf1.ecx & (1 << 27) != 0; // OSXSAVE: xgetbv is available
    if !os_saves_state || std::arch::x86_64::__get_cpuid_max(0).0 < 7 {
        return false;
    }
    let leaf7 = std::arch::x86_64::__cpuid_count(7, 0);
    let (tile, int8) = (leaf7.edx & (1 << 24) != 0, leaf7.edx & (1 << 25) != 0);
    if !(tile && int8) {
        return false;
    }
    // SAFETY: OSXSAVE is set, so `xgetbv` is enabled; XCR0 is register 0.
    let xcr0 = unsafe { xgetbv0() };
    if xcr0 & (0b11 << 17) != 0b11 << 17 {
        return false;
    }
    permission()
}

/// # Safety
/// CPUID.1:ECX.OSXSAVE must be set.
#[target_feature(enable = "xsave")]
unsafe fn xgetbv0() -> u64 {
    // SAFETY: the caller guarantees OSXSAVE, which enables `xgetbv`.
    unsafe { std::arch::x86_64::_xgetbv(0) }
}

#[cfg(target_os = "linux")]
fn permission() -> bool {
    const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
    const XFEATURE_XTILEDATA: libc::c_long = 18;
    // SAFETY: arch_prctl with ARCH_REQ_XCOMP_PERM takes an integer feature number and touches
    // no memory of ours; it fails cleanly (-1) on kernels without AMX support.
    let granted = unsafe {
        libc::syscall(
            libc::SYS_arch_prctl,
            ARCH_REQ_XCOMP_PERM,
            XFEATURE_XTILEDATA,
        )
    };
    granted == 0
}

#[cfg(not(target_os = "linux"))]
fn permission() -> bool {
    // Other systems grant tile state differently (or not at all): keep to VNNI there.
    false
}

/// Integer dots of query rows against two corpus panels: `out[r * 2 * NR + p * NR + j]` is
/// the dot of query row `r` (`queries[r * stride..][..groups * GROUP]`) with row `j` of
/// `panels[p]` (`[group][NR][GROUP]`), for `r < 2 * AMX_ROWS * pairs`.
///
/// # Safety
/// [`request`] must have returned true. `groups` must be a positive multiple of
/// `AMX_DEPTH / GROUP`; each panel must hold `groups * NR * GROUP` bytes; `queries` must hold
/// `(2 * AMX_ROWS * pairs - 1) * stride + groups * GROUP` bytes, `stride >= groups * GROUP`;
/// `out` must hold `2 * AMX_ROWS * pairs * 2 * NR` values.
pub(super) unsafe fn dots(
    groups: usize,
    queries: &[u8],
    stride: usize,
    pairs: usize,
    panels: [&[i8]; 2],
    out: &mut [i32],
) {
    let config = TileConfig::square();
    let chunks = groups * GROUP / AMX_DEPTH;
    let chunk_bytes = AMX_DEPTH / GROUP * NR * GROUP; // one B tile: 16 rows of 64 bytes
    let (b0, b1) = (panels[0].as_ptr(), panels[1].as_ptr());
    // Bytes per output row: two panels of 16 i32.
    let out_stride = 2 * NR * 4;
    // SAFETY: the tile config is valid (palette 1, 8 tiles of 16 x 64 bytes);
    // every tile load reads 16 rows of 64 bytes at the given stride, inside the slices as the
    // caller guarantees; every store writes 16 rows of 64 bytes inside `out`.
    unsafe {
        asm!("ldtilecfg [{0}]", in(reg) config.0.as_ptr(), options(nostack, readonly));
        for pair in 0..pairs {
            let a0 = queries.as_ptr().add(pair * 2 * AMX_ROWS * stride);
            let a1 = a0.add(AMX_ROWS * stride);
            asm!(
                "tilezero tmm0",
                "tilezero tmm1",
                "tilezero tmm2",
                "tilezero tmm3",
                options(nostack, nomem)
            );
            for c in 0..chunks {
                // Tile registers are not renamed: a load waits for the products reading the
                // register before it. Each load comes right before its first product, so
                // loads overlap the products still running on the other registers.
                asm!(
                    "tileloadd tmm6, [{b0} + {b_stride}]",
                    "tileloadd tmm4, [{a0} + {a_stride}]",
                    "tdpbusd tmm0, tmm4, tmm6",
                    "tileloadd tmm7, [{b1} + {b_stride}]",
                    "tdpbusd tmm1, tmm4, tmm7",
                    "tileloadd tmm5, [{a1} + {a_stride}]",
                    "tdpbusd tmm2, tmm5, tmm6",
                    "tdpbusd tmm3, tmm5, tmm7",
                    b0 = in(reg) b0.add(c * chunk_bytes),
                    b1 = in(reg) b1.add(c * chunk_bytes),
                    a0 = in(reg) a0.add(c * AMX_DEPTH),
                    a1 = in(reg) a1.add(c * AMX_DEPTH),
                    b_stride = in(reg) NR * GROUP,
                    a_stride = in(reg) stride,
                    options(nostack, readonly)
                );
            }
            let o0 = out.as_mut_ptr().add(pair * 2 * AMX_ROWS * 2 * NR);
            let o1 = o0.add(AMX_ROWS * 2 * NR);
            asm!(
                "tilestored [{o0} + {s}], tmm0",
                "tilestored [{o0n} + {s}], tmm1",
                "tilestored [{o1} + {s}], tmm2",
                "tilestored [{o1n} + {s}], tmm3",
                o0 = in(reg) o0,
                o0n = in(reg) o0.add(NR),
                o1 = in(reg) o1,
                o1n = in(reg) o1.add(NR),
                s = in(reg) out_stride,
                options(nostack)
            );
        }
        asm!("tilerelease", options(nostack, nomem));
    }
}
