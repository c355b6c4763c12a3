//! A classic-BPF interpreter for seccomp programs, for tests: it runs a program on one
//! `struct seccomp_data` as the kernel would, so two programs can be compared call by call.

/// `struct seccomp_data` as bytes: the syscall number, the audit architecture and the
/// arguments (the instruction pointer left at 0).
pub struct SeccompData([u8; 64]);

impl SeccompData {
    pub fn new(nr: u32, arch: u32, args: [u64; 6]) -> SeccompData {
        let mut bytes = [0u8; 64];
        bytes[0..4].copy_from_slice(&nr.to_ne_bytes());
        bytes[4..8].copy_from_slice(&arch.to_ne_bytes());
        for (i, a) in args.iter().enumerate() {
            bytes[16 + 8 * i..24 + 8 * i].copy_from_slice(&a.to_ne_bytes());
        }
        SeccompData(bytes)
    }

    /// The 32-bit word at byte offset `k`, as `BPF_LD | BPF_W | BPF_ABS` reads it.
    fn word(&self, k: u32) -> Result<u32, String> {
        let k = k as usize;
        match self.0.get(k..k + 4) {
            Some(w) if k.is_multiple_of(4) => Ok(u32::from_ne_bytes([w[0], w[1], w[2], w[3]])),
            _ => Err(format!("load at offset {k}")),
        }
    }
}

/// A program's instructions (`struct sock_filter`: code, jt, jf, k), decoded once.
pub struct Program(Vec<(u16, u8, u8, u32)>);

impl Program {
    pub fn new(bytes: &[u8]) -> Program {
        Program(
            bytes
                .chunks_exact(8)
                .map(|c| {
                    (
                        u16::from_ne_bytes([c[0], c[1]]),
                        c[2],
                        c[3],
                        u32::from_ne_bytes([c[4], c[5], c[6], c[7]]),
                    )
                })
                .collect(),
        )
    }

    /// The value the program returns for `data` (`SECCOMP_RET_*` and its data), or what in
    /// it this interpreter does not know (the kernel would refuse it anyway).
    pub fn run(&self, data: &SeccompData) -> Result<u32, String> {
        let insns = &self.0;
        let (mut a, mut x, mut mem) = (0u32, 0u32, [0u32; 16]);
        let mut pc = 0usize;
        loop {
            let &(code, jt, jf, k) = insns.get(pc).ok_or_else(|| format!("ran off the end at {pc}"))?;
            pc += 1;
            let src = if code & 0x08 != 0 { x } else { k };
            let slot = |k: u32| {
                usize::try_from(k)
                    .ok()
                    .filter(|&i| i < 16)
                    .ok_or(format!("memory slot {k}"))
            };
            match code & 0x07 {
                // BPF_LD: W|ABS, IMM, MEM
                0x00 => {
                    a = match code & 0xe0 {
                        0x20 => data.word(k)?,
                        0x00 => k,
                        0x60 => mem[slot(k)?],
                        _ => return Err(format!("ld {code:#x}")),
                    }
                }
                // BPF_LDX: IMM, MEM
                0x01 => {
                    x = match code & 0xe0 {
                        0x00 => k,
                        0x60 => mem[slot(k)?],
                        _ => return Err(format!("ldx {code:#x}")),
                    }
                }
                0x02 => mem[slot(k)?] = a,
                0x03 => mem[slot(k)?] = x,
                // BPF_ALU
                0x04 => {
                    a = match code & 0xf0 {
                        0x00 => a.wrapping_add(src),
                        0x10 => a.wrapping_sub(src),
                        0x40 => a | src,
                        0x50 => a & src,
                        0x80 => a.wrapping_neg(),
                        _ => return Err(format!("alu {code:#x}")),
                    }
                }
                // BPF_JMP
                0x05 => {
                    let taken = match code & 0xf0 {
                        0x00 => {
                            pc += k as usize;
                            continue;
                        }
                        0x10 => a == src,
                        0x20 => a > src,
                        0x30 => a >= src,
                        0x40 => a & src != 0,
                        _ => return Err(format!("jmp {code:#x}")),
                    };
                    pc += usize::from(if taken { jt } else { jf });
                }
                // BPF_RET: K or A
                0x06 => return Ok(if code & 0x18 == 0x10 { a } else { k }),
                // BPF_MISC: TAX, TXA
                _ => {
                    if code & 0xf8 == 0x80 {
                        a = x
                    } else {
                        x = a
                    }
                }
            }
        }
    }
}
