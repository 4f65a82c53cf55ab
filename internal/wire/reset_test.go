package wire

import "syscall"

var syscallReset = syscall.ECONNRESET
