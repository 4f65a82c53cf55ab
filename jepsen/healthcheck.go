package jepsen

import (
	"fmt"
	"io"
	"net/http"
	"time"
)

// HealthcheckMain is `pflex healthcheck URL`: exit 0 when GET URL answers 200 within 2 s, 1
// otherwise. Container health checks use it: an image FROM scratch has no curl or shell.
func HealthcheckMain(args []string, stderr io.Writer) int {
	if len(args) != 1 {
		fmt.Fprintln(stderr, "usage: pflex healthcheck URL")
		return 2
	}
	c := &http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(args[0])
	if err != nil {
		fmt.Fprintln(stderr, "unhealthy:", err)
		return 1
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		fmt.Fprintln(stderr, "unhealthy:", resp.Status)
		return 1
	}
	return 0
}
