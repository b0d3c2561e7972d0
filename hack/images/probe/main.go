// Command probe is the test image of the local real node: it reports, one line per check, what a
// container sees (its uid, a read-only root filesystem, the API server through the kubernetes
// service, no route off the machine) and exits 1 if any check fails. Stdlib only, built static.
package main

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"time"
)

const saDir = "/var/run/secrets/kubernetes.io/serviceaccount"

var failed bool

func report(ok bool, format string, args ...any) {
	status := "ok"
	if !ok {
		status = "FAIL"
		failed = true
	}
	fmt.Printf("probe: %s: %s\n", status, fmt.Sprintf(format, args...))
}

func apiserverVersion() (string, error) {
	host, port := os.Getenv("KUBERNETES_SERVICE_HOST"), os.Getenv("KUBERNETES_SERVICE_PORT")
	if host == "" {
		return "", fmt.Errorf("KUBERNETES_SERVICE_HOST is not set")
	}
	caPEM, err := os.ReadFile(saDir + "/ca.crt")
	if err != nil {
		return "", err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	token, err := os.ReadFile(saDir + "/token")
	if err != nil {
		return "", err
	}
	client := &http.Client{
		Timeout:   10 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}},
	}
	req, _ := http.NewRequest("GET", "https://"+net.JoinHostPort(host, port)+"/version", nil)
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(token)))
	resp, err := client.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var version struct {
		GitVersion string `json:"gitVersion"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&version); err != nil {
		return "", fmt.Errorf("HTTP %d: %w", resp.StatusCode, err)
	}
	return version.GitVersion, nil
}

func main() {
	fmt.Printf("probe: running as uid=%d gid=%d\n", os.Getuid(), os.Getgid())
	want := os.Getenv("PROBE_EXPECT_UID")
	if want != "" {
		report(fmt.Sprint(os.Getuid()) == want, "uid %d (want %s)", os.Getuid(), want)
	}
	if f, err := os.Create("/probe-write-test"); err == nil {
		f.Close()
		report(false, "root filesystem is writable")
	} else {
		report(true, "root filesystem is read-only (%v)", err)
	}
	if os.Getenv("PROBE_APISERVER") != "" {
		version, err := apiserverVersion()
		report(err == nil, "API server through the kubernetes service: %s%v", version, errOrEmpty(err))
	}
	if target := os.Getenv("PROBE_EGRESS"); target != "" {
		conn, err := net.DialTimeout("tcp", target, 3*time.Second)
		if err == nil {
			conn.Close()
		}
		report(err != nil, "no route off the machine: dial %s: %v", target, err)
	}
	for _, line := range os.Args[1:] {
		fmt.Println(line)
	}
	if failed {
		os.Exit(1)
	}
}

func errOrEmpty(err error) any {
	if err == nil {
		return ""
	}
	return err
}
