#include "textflag.h"

// func int80(trap, a1 uintptr) (r1 uintptr)
//
// Makes an i386 syscall through the IA-32 emulation's `int $0x80` gate: trap
// in AX, the first argument in BX, the result in AX.
TEXT ·int80(SB), NOSPLIT, $0-24
	MOVQ trap+0(FP), AX
	MOVQ a1+8(FP), BX
	INT  $0x80
	MOVQ AX, r1+16(FP)
	RET
