package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

var errNotFound = errors.New("not found")

// tierkvHTTP talks to a tierkv cluster through its HTTP API:
// POST /v1/kv/{key} and GET /v1/kv/{key} with X-Consistency-Level.
type tierkvHTTP struct {
	endpoints []string
	levels    []string
	client    *http.Client
}

func newTierkvHTTP(endpoints string, levels []string) (*tierkvHTTP, error) {
	t := &tierkvHTTP{levels: levels, client: &http.Client{
		Timeout:   30 * time.Second,
		Transport: &http.Transport{MaxIdleConnsPerHost: 256, MaxConnsPerHost: 256},
	}}
	for _, e := range splitEndpoints(endpoints) {
		t.endpoints = append(t.endpoints, "http://"+strings.TrimPrefix(e, "http://"))
	}
	if len(t.endpoints) == 0 {
		return nil, errors.New("no tierkv endpoints")
	}
	return t, nil
}

// splitEndpoints splits a comma-separated -tierkv-endpoints list.
func splitEndpoints(s string) []string {
	var out []string
	for _, e := range strings.Split(s, ",") {
		if e = strings.TrimSpace(e); e != "" {
			out = append(out, e)
		}
	}
	return out
}

func (t *tierkvHTTP) Name() string            { return "tierkv" }
func (t *tierkvHTTP) Consistencies() []string { return t.levels }

func (t *tierkvHTTP) url(client int, key string) string {
	return t.endpoints[client%len(t.endpoints)] + "/v1/kv/" + url.PathEscape(key)
}

func (t *tierkvHTTP) do(req *http.Request, consistency string) ([]byte, error) {
	req.Header.Set("X-Consistency-Level", consistency)
	resp, err := t.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	switch {
	case resp.StatusCode == http.StatusNotFound:
		return nil, errNotFound
	case resp.StatusCode >= 300:
		return nil, fmt.Errorf("%s %s: %s: %s", req.Method, req.URL.Path, resp.Status, bytes.TrimSpace(body))
	}
	return body, nil
}

func (t *tierkvHTTP) Put(ctx context.Context, client int, key string, value []byte, consistency string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, t.url(client, key), bytes.NewReader(value))
	if err != nil {
		return err
	}
	_, err = t.do(req, consistency)
	return err
}

func (t *tierkvHTTP) Get(ctx context.Context, client int, key string, consistency string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, t.url(client, key), nil)
	if err != nil {
		return nil, err
	}
	return t.do(req, consistency)
}

func (t *tierkvHTTP) Close() error { t.client.CloseIdleConnections(); return nil }
