//! Note descriptors: NT_PRSTATUS (x86_64 and i386), the QEMU CPU-state note, and the
//! order notes are written in.
