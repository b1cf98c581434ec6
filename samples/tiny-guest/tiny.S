/*
 * dumpconv sample guest: a tiny x86-64 kernel whose only job is to leave real 4-level
 * page tables (built by code running on the CPU) in a QEMU memory dump.
 *
 * Boot: QEMU `-kernel` loads it as a Multiboot v1 image. The file is an ELF64 (so `nm`
 * shows the real kernel-virtual addresses), which QEMU's multiboot loader refuses as
 * ELF ("Cannot load x86-64 image"), so the header sets the a.out-kludge flag (bit 16)
 * and QEMU loads the file flat: bytes [text offset, +load_end-load_addr) to physical
 * load_addr = 0x100000, zeroes up to bss_end, enters entry_addr in 32-bit protected
 * mode with paging off, EAX = 0x2BADB002, EBX = multiboot info.
 *
 * Linked at KERNEL_VMA = 0xffffffff80000000, loaded at KERNEL_PHYS = 0x100000: before
 * paging, a symbol's physical address is (sym - KOFF).
 *
 * Page tables built by boot32 (see ../README.md for the table):
 *   PML4[0]   -> PDPT_LO[0] -> PD_LO[0..1]  identity 0..4 MiB, 2 MiB pages (P|RW|PS)
 *                             PD_LO[2]    -> PT_USER  user half, 4 KiB pages, U/S:
 *                                 [0] 0x400000 -> user_page  P|RW|US
 *                                 [1] 0x401000 -> user_page  P|US|NX  (alias, read-only)
 *   PML4[273] -> PDPT_DM[0] -> PD_DM[0]     0xffff888000000000 -> 0, 2 MiB page, P|RW|PS|NX
 *   PML4[511] -> PDPT_K[510] -> PD_K[0] -> PT_K  kernel half, 4 KiB pages:
 *                 .text           P          (read-only, executable)
 *                 .rodata         P|NX|bit52 (software-available bit 52 set)
 *                 .data/.bss      P|RW|NX
 *                 next PTE        not present, but holds a stale address (user_page|RW)
 */

#define KERNEL_VMA	0xffffffff80000000
#define KERNEL_PHYS	0x100000
#define KOFF		(KERNEL_VMA - KERNEL_PHYS)
#define PA(sym)		((sym) - KOFF)

#define MB_MAGIC	0x1BADB002
#define MB_FLAGS	((1 << 16) | (1 << 1) | (1 << 0))	/* a.out kludge, mem info, align */

#define P		0x001
#define RW		0x002
#define US		0x004
#define PS		0x080
#define NX_HI		0x80000000		/* bit 63, in the high dword */
#define SW52_HI		0x00100000		/* bit 52, in the high dword */

#define COM1		0x3f8

/* -------------------------------------------------------------------------------- */
	.section .multiboot, "a"
	.balign 4
mb_header:
	.long	MB_MAGIC
	.long	MB_FLAGS
	.long	-(MB_MAGIC + MB_FLAGS)
	.long	PA(mb_header)		/* header_addr */
	.long	PA(_text)		/* load_addr */
	.long	PA(_edata)		/* load_end_addr */
	.long	PA(_end)		/* bss_end_addr */
	.long	PA(_start32)		/* entry_addr */

/* -------------------------------------------------------------------------------- */
	.section .text.boot32, "ax"
	.code32
	.globl	_start32
_start32:
	cli
	cld
	lgdt	PA(gdt_desc32)
	ljmp	$0x08, $PA(1f)
1:	mov	$0x18, %cx
	mov	%cx, %ds
	mov	%cx, %es
	mov	%cx, %ss
	xor	%cx, %cx
	mov	%cx, %fs
	mov	%cx, %gs
	mov	$PA(stack_top), %esp
	mov	%eax, PA(boot_magic)		/* not in .bss: written before the clear */
	mov	%ebx, PA(boot_mbi)

	/* clear .bss (stack, user page, page tables) */
	mov	$PA(__bss_start), %edi
	mov	$PA(_end), %ecx
	sub	%edi, %ecx
	shr	$2, %ecx
	xor	%eax, %eax
	rep stosl

	/* PML4 */
	movl	$PA(pdpt_lo) + (P|RW|US), PA(pml4) + 8*0
	movl	$PA(pdpt_dm) + (P|RW),    PA(pml4) + 8*273
	movl	$PA(pdpt_k)  + (P|RW),    PA(pml4) + 8*511

	/* identity map 0..4 MiB with two 2 MiB pages; 4..6 MiB is PT_USER */
	movl	$PA(pd_lo) + (P|RW|US),   PA(pdpt_lo) + 8*0
	movl	$0x000000 + (P|RW|PS),    PA(pd_lo) + 8*0
	movl	$0x200000 + (P|RW|PS),    PA(pd_lo) + 8*1
	movl	$PA(pt_user) + (P|RW|US), PA(pd_lo) + 8*2
	movl	$PA(user_page) + (P|RW|US), PA(pt_user) + 8*0	/* 0x400000 */
	movl	$PA(user_page) + (P|US),    PA(pt_user) + 8*1	/* 0x401000: alias */
	movl	$NX_HI,                     PA(pt_user) + 8*1 + 4

	/* direct map: 0xffff888000000000 -> 0, one 2 MiB page, NX */
	movl	$PA(pd_dm) + (P|RW),      PA(pdpt_dm) + 8*0
	movl	$0x000000 + (P|RW|PS),    PA(pd_dm) + 8*0
	movl	$NX_HI,                   PA(pd_dm) + 8*0 + 4

	/* kernel half: 0xffffffff80000000 -> 0x100000, 4 KiB pages */
	movl	$PA(pd_k) + (P|RW),       PA(pdpt_k) + 8*510
	movl	$PA(pt_k) + (P|RW),       PA(pd_k) + 8*0
	mov	$PA(pt_k), %edi
	mov	$PA(_text), %esi
2:	mov	%esi, %eax
	cmp	$PA(__rodata_start), %esi
	jae	3f
	or	$P, %eax			/* .text: read-only, executable */
	xor	%edx, %edx
	jmp	5f
3:	cmp	$PA(__data_start), %esi
	jae	4f
	or	$P, %eax			/* .rodata: read-only, NX, software bit 52 */
	mov	$(NX_HI | SW52_HI), %edx
	jmp	5f
4:	or	$(P|RW), %eax			/* .data, .bss: NX */
	mov	$NX_HI, %edx
5:	mov	%eax, (%edi)
	mov	%edx, 4(%edi)
	add	$8, %edi
	add	$0x1000, %esi
	cmp	$PA(_end), %esi
	jb	2b
	/* guard after the image: not present, yet a stale frame address and RW */
	movl	$PA(user_page) + RW, (%edi)
	movl	$0, 4(%edi)

	/* PAE, then EFER.LME|NXE, CR3, CR0.PG|WP -> IA-32e (compatibility) mode */
	mov	%cr4, %eax
	or	$(1 << 5), %eax
	mov	%eax, %cr4
	mov	$0xc0000080, %ecx
	rdmsr
	or	$((1 << 8) | (1 << 11)), %eax
	wrmsr
	mov	$PA(pml4), %eax
	mov	%eax, %cr3
	mov	%cr0, %eax
	or	$0x80010000, %eax
	mov	%eax, %cr0
	ljmp	$0x10, $PA(long64_low)

	.code64
long64_low:					/* 64-bit, still at the identity address */
	movabs	$long64, %rax
	jmp	*%rax

/* -------------------------------------------------------------------------------- */
	.text
	.code64
long64:						/* from here on, kernel-virtual addresses */
	lgdt	gdt_desc64(%rip)
	lea	stack_top(%rip), %rsp
	push	$0x10
	lea	1f(%rip), %rax
	push	%rax
	lretq
1:	mov	$0x18, %eax
	mov	%eax, %ds
	mov	%eax, %es
	mov	%eax, %ss
	xor	%eax, %eax
	mov	%eax, %fs
	mov	%eax, %gs

	/* the banner, written through the kernel-half mapping (immediates only: the
	   string exists in memory only once this code has run) */
	lea	banner(%rip), %rdi
	movabs	$0x766e6f63706d7564, %rax	/* "dumpconv" */
	mov	%rax, 0(%rdi)
	movabs	$0x20656c706d617320, %rax	/* " sample " */
	mov	%rax, 8(%rdi)
	movabs	$0x34203a7473657567, %rax	/* "guest: 4" */
	mov	%rax, 16(%rdi)
	movabs	$0x70206c6576656c2d, %rax	/* "-level p" */
	mov	%rax, 24(%rdi)
	movabs	$0x4b4f20676e696761, %rax	/* "aging OK" */
	mov	%rax, 32(%rdi)
	movabs	$0x000000000000000a, %rax	/* "\n\0" */
	mov	%rax, 40(%rdi)

	/* the user page, written through the user-half mapping 0x400000 */
	mov	$0x400000, %edi
	movabs	$0x766e6f63706d7564, %rax	/* "dumpconv" */
	mov	%rax, 0(%rdi)
	movabs	$0x20656c706d617320, %rax	/* " sample " */
	mov	%rax, 8(%rdi)
	movabs	$0x6761702072657375, %rax	/* "user pag" */
	mov	%rax, 16(%rdi)
	movabs	$0x3030347830203a65, %rax	/* "e: 0x400" */
	mov	%rax, 24(%rdi)
	movabs	$0x30203d3d20303030, %rax	/* "000 == 0" */
	mov	%rax, 32(%rdi)
	movabs	$0x0a30303031303478, %rax	/* "x401000\n" */
	mov	%rax, 40(%rdi)

	/* checks: the alias and the direct map must show what was written */
	mov	$0x401000, %rsi
	mov	$0x400000, %rdi
	mov	$6, %ecx
	repe cmpsq
	jne	fail
	lea	banner(%rip), %rsi
	movabs	$PA(banner) + 0xffff888000000000, %rdi
	mov	$6, %ecx
	repe cmpsq
	jne	fail

	/* serial: rodata line (a PTE with bit 52 set), user line (via the alias), banner */
	lea	rodata_line(%rip), %rsi
	call	puts
	mov	$0x401000, %esi
	call	puts
	lea	banner(%rip), %rsi
	call	puts
	jmp	halt

fail:	lea	fail_line(%rip), %rsi
	call	puts
halt:	cli
	hlt
	jmp	halt

/* puts: write the NUL-terminated string at %rsi to COM1 */
puts:	mov	$COM1 + 5, %dx
1:	in	%dx, %al			/* wait for THRE */
	test	$0x20, %al
	jz	1b
	lodsb
	test	%al, %al
	jz	2f
	mov	$COM1, %dx
	out	%al, %dx
	jmp	puts
2:	ret

/* -------------------------------------------------------------------------------- */
	.section .rodata, "a"
	.globl	rodata_line
rodata_line:
	.asciz	"dumpconv sample rodata: read through a PTE with NX and software bit 52\n"
fail_line:
	.asciz	"dumpconv sample guest: FAIL\n"

/* -------------------------------------------------------------------------------- */
	.data
	.balign	8
gdt:	.quad	0
	.quad	0x00cf9b000000ffff		/* 0x08: code, 32-bit (accessed bit preset) */
	.quad	0x00af9b000000ffff		/* 0x10: code, 64-bit */
	.quad	0x00cf93000000ffff		/* 0x18: data */
gdt_end:
	.balign	8
	.word	0
gdt_desc32:					/* lgdt before paging: physical base */
	.word	gdt_end - gdt - 1
	.long	PA(gdt)
	.balign	8
	.word	0, 0, 0
gdt_desc64:					/* lgdt in long mode: virtual base */
	.word	gdt_end - gdt - 1
	.quad	gdt
	.globl	boot_magic, boot_mbi
boot_magic:	.long	0
boot_mbi:	.long	0
	.balign	64
	.globl	banner
banner:	.space	64

/* -------------------------------------------------------------------------------- */
	.section .bss, "aw", @nobits
	.balign	4096
	.globl	stack_bottom, stack_top, user_page
	.globl	pml4, pdpt_lo, pd_lo, pt_user, pdpt_dm, pd_dm, pdpt_k, pd_k, pt_k
stack_bottom:	.space	4096
stack_top:
user_page:	.space	4096
pml4:		.space	4096
pdpt_lo:	.space	4096
pd_lo:		.space	4096
pt_user:	.space	4096
pdpt_dm:	.space	4096
pd_dm:		.space	4096
pdpt_k:		.space	4096
pd_k:		.space	4096
pt_k:		.space	4096
