// Command pause is the sandbox ("pause") container of the local cluster's real nodes: it
// holds a pod's namespaces open and does nothing else until it is told to stop. Built here
// because no image can be pulled on the machines this project runs on.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM)
	// Reap the children a pod's other containers may leave to PID 1 of a shared PID namespace.
	signal.Ignore(syscall.SIGCHLD)
	<-signals
}
