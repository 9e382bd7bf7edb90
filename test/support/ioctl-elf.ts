/**
 * A 4 KiB static x86-64 program, assembled here so a test can make one raw ioctl inside any image (busybox
 * has no btrfs tool and CI has no compiler): open(dir, O_DIRECTORY); ioctl(fd, cmd, &vol_args{name});
 * exit(errno). Exit 0 = the ioctl succeeded, 1 = EPERM, 100 = open failed.
 */
export function ioctlElf(dir: string, cmd: bigint, name: string): Buffer {
  const base = 0x400000n;
  const codeAt = 120; // ELF header (64) + one program header (56)
  const pathAt = codeAt + 80;
  const argsAt = pathAt + 64;
  const size = argsAt + 4096; // struct btrfs_ioctl_vol_args: s64 fd, char name[4088]
  if (Buffer.byteLength(dir) >= 64 || Buffer.byteLength(name) >= 4088) throw new Error('path or name too long');
  const b = Buffer.alloc(size);
  // ELF header
  Buffer.from([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1, 0]).copy(b, 0);
  b.writeUInt16LE(2, 16); // ET_EXEC
  b.writeUInt16LE(0x3e, 18); // x86-64
  b.writeUInt32LE(1, 20);
  b.writeBigUInt64LE(base + BigInt(codeAt), 24); // entry
  b.writeBigUInt64LE(64n, 32); // program headers
  b.writeUInt16LE(64, 52);
  b.writeUInt16LE(56, 54);
  b.writeUInt16LE(1, 56);
  // PT_LOAD of the whole file, read + execute
  b.writeUInt32LE(1, 64);
  b.writeUInt32LE(5, 68);
  b.writeBigUInt64LE(0n, 72);
  b.writeBigUInt64LE(base, 80);
  b.writeBigUInt64LE(base, 88);
  b.writeBigUInt64LE(BigInt(size), 96);
  b.writeBigUInt64LE(BigInt(size), 104);
  b.writeBigUInt64LE(0x1000n, 112);
  const imm64 = (v: bigint) => {
    const x = Buffer.alloc(8);
    x.writeBigUInt64LE(v);
    return [...x];
  };
  const code = [
    ...[0xb8, 2, 0, 0, 0], // mov eax, SYS_open
    ...[0x48, 0xbf, ...imm64(base + BigInt(pathAt))], // movabs rdi, path
    ...[0xbe, 0, 0, 1, 0], // mov esi, O_DIRECTORY
    ...[0x31, 0xd2], // xor edx, edx
    ...[0x0f, 0x05], // syscall
    ...[0x85, 0xc0], // test eax, eax
    ...[0x78, 0x28], // js open_failed
    ...[0x89, 0xc7], // mov edi, eax
    ...[0xb8, 16, 0, 0, 0], // mov eax, SYS_ioctl
    ...[0x48, 0xbe, ...imm64(cmd)], // movabs rsi, cmd (all 64 bits: upper bits must not get past a filter)
    ...[0x48, 0xba, ...imm64(base + BigInt(argsAt))], // movabs rdx, args
    ...[0x0f, 0x05], // syscall
    ...[0xf7, 0xd8], // neg eax
    ...[0x89, 0xc7], // mov edi, eax
    ...[0xb8, 60, 0, 0, 0], // mov eax, SYS_exit
    ...[0x0f, 0x05], // syscall
    ...[0xbf, 100, 0, 0, 0], // open_failed: mov edi, 100
    ...[0xb8, 60, 0, 0, 0], // mov eax, SYS_exit
    ...[0x0f, 0x05], // syscall
  ];
  if (code.length !== 80) throw new Error(`code is ${code.length} bytes, layout expects 80`);
  Buffer.from(code).copy(b, codeAt);
  b.write(dir, pathAt);
  b.write(name, argsAt + 8);
  return b;
}

export const BTRFS_IOC_SUBVOL_CREATE = 0x5000940en;
export const BTRFS_IOC_SNAP_CREATE = 0x50009401n;
