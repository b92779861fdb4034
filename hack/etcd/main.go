// Command etcd wraps etcd's own main. `go install go.etcd.io/etcd/server/v3@v3.7.x`
// is refused because etcd's go.mod carries replace directives, and Debian's etcd
// (3.4) is older than kube-apiserver 1.37 supports, so Harbinger builds it here.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
