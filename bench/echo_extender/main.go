// A do-nothing kube-scheduler extender in Go: /filter passes every node, /prioritize scores
// every node 0. The extender benchmark runs kube-scheduler against it to measure what the
// HTTP extender mechanism itself costs, apart from any extender's own work.
package main

import (
	"encoding/json"
	"net/http"
	"os"
)

type args struct {
	NodeNames *[]string
}

type hostPriority struct {
	Host  string
	Score int64
}

func decode(r *http.Request) args {
	var a args
	_ = json.NewDecoder(r.Body).Decode(&a)
	return a
}

func main() {
	http.HandleFunc("/filter", func(w http.ResponseWriter, r *http.Request) {
		a := decode(r)
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"NodeNames": a.NodeNames, "FailedNodes": map[string]string{}, "Error": ""})
	})
	http.HandleFunc("/prioritize", func(w http.ResponseWriter, r *http.Request) {
		a := decode(r)
		scores := []hostPriority{}
		if a.NodeNames != nil {
			for _, name := range *a.NodeNames {
				scores = append(scores, hostPriority{Host: name})
			}
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(scores)
	})
	http.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("ok")) })
	if err := http.ListenAndServe("127.0.0.1:"+os.Args[1], nil); err != nil {
		panic(err)
	}
}
