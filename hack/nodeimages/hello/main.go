// Command hello is the smallest HTTP service for tests of the local cluster's real nodes: it
// answers every request with the pod's name (HOSTNAME), on $PORT (default 8080). At
// /apiserver it asks the apiserver for its version the way an in-cluster client does (the
// `kubernetes` Service's address from the environment, the service account's CA and token),
// and answers with what it got, so a test can see pods reach the control plane. With
// $UPSTREAM set (a URL, such as http://payments.shop.svc/), each request to / first calls it
// and passes a failure on as a 502 with no retry, as many real services do: a chain of these
// (frontend -> checkout -> payments) carries a fault in the last one to the first.
package main

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"time"
)

const serviceAccount = "/var/run/secrets/kubernetes.io/serviceaccount/"

func apiserverVersion() (string, error) {
	ca, err := os.ReadFile(serviceAccount + "ca.crt")
	if err != nil {
		return "", err
	}
	token, err := os.ReadFile(serviceAccount + "token")
	if err != nil {
		return "", err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	client := &http.Client{Timeout: 5 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	address := net.JoinHostPort(os.Getenv("KUBERNETES_SERVICE_HOST"), os.Getenv("KUBERNETES_SERVICE_PORT"))
	request, err := http.NewRequest("GET", "https://"+address+"/version", nil)
	if err != nil {
		return "", err
	}
	request.Header.Set("Authorization", "Bearer "+string(token))
	response, err := client.Do(request)
	if err != nil {
		return "", err
	}
	defer response.Body.Close()
	body, err := io.ReadAll(response.Body)
	return fmt.Sprintf("%d %s", response.StatusCode, body), err
}

func main() {
	port := os.Getenv("PORT")
	if port == "" {
		port = "8080"
	}
	upstream := os.Getenv("UPSTREAM")
	client := &http.Client{Timeout: 5 * time.Second}
	http.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) {
		if upstream != "" {
			response, err := client.Get(upstream)
			if err != nil {
				http.Error(w, "upstream unreachable: "+err.Error(), http.StatusBadGateway)
				return
			}
			body, _ := io.ReadAll(response.Body)
			response.Body.Close()
			if response.StatusCode >= 300 {
				http.Error(w, fmt.Sprintf("upstream answered %d", response.StatusCode), http.StatusBadGateway)
				return
			}
			fmt.Fprintf(w, "hello from %s, after %s", os.Getenv("HOSTNAME"), body)
			return
		}
		fmt.Fprintf(w, "hello from %s\n", os.Getenv("HOSTNAME"))
	})
	http.HandleFunc("/apiserver", func(w http.ResponseWriter, _ *http.Request) {
		answer, err := apiserverVersion()
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		fmt.Fprint(w, answer)
	})
	if err := http.ListenAndServe(":"+port, nil); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
