package httpsend

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/otawatch/otawatch/services/notify"
)

// MaxAnswer bounds notify.Result.Answer, in bytes: what NOTIFY records of
// a receiver's answer.
const MaxAnswer = 512

// MaxRetryAfter caps a Retry-After: a receiver asking for more is still
// retried, after this long, rather than holding a notification for days.
const MaxRetryAfter = time.Hour

// maxBody is how much of an answer is read; the rest is discarded so the
// connection can be reused.
const maxBody = 64 << 10

// NewClient returns the HTTP client receivers share the settings of: the
// environment's proxy (HTTPS_PROXY), no redirects (a 3xx is an answer,
// not a new destination for a signed or secret-bearing body), and no
// client-wide timeout (Post bounds each attempt).
func NewClient() *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	return &http.Client{
		Transport: tr,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}

// Request is one POST.
type Request struct {
	// URL is where to post. It may hold a secret (a Slack webhook):
	// errors show only its scheme and host.
	URL string
	// Header is added to the request; ContentType defaults to JSON.
	Header      http.Header
	ContentType string
	Body        []byte
}

// Post makes one attempt at req with client, bounded by timeout (and
// ctx), and classifies the answer (Classify, ClassifyError).
func Post(ctx context.Context, client *http.Client, timeout time.Duration, req Request) (notify.Result, error) {
	endpoint := Endpoint(req.URL)
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	hr, err := http.NewRequestWithContext(ctx, http.MethodPost, req.URL, bytes.NewReader(req.Body))
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return notify.Result{}, fmt.Errorf("post to %s: bad request: %w", endpoint, err)
	}
	if hr.URL.Scheme != "http" && hr.URL.Scheme != "https" {
		return notify.Result{}, fmt.Errorf("post to %s: scheme %q is not http or https", endpoint, hr.URL.Scheme)
	}
	for k, vs := range req.Header {
		hr.Header[k] = vs
	}
	ct := req.ContentType
	if ct == "" {
		ct = "application/json"
	}
	hr.Header.Set("Content-Type", ct)
	if hr.Header.Get("User-Agent") == "" {
		hr.Header.Set("User-Agent", "otawatch")
	}
	resp, err := client.Do(hr)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			err = fmt.Errorf("no answer within %s: %w", timeout, context.DeadlineExceeded)
		}
		return ClassifyError(endpoint, err)
	}
	defer resp.Body.Close()
	body, rerr := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxBody))
	res, err := Classify(endpoint, resp, body, time.Now())
	if err == nil && rerr != nil && resp.StatusCode/100 != 2 {
		err = fmt.Errorf("post to %s: read answer: %w", endpoint, rerr)
	}
	return res, err
}

// Classify turns an HTTP answer into a Result and, for anything but a 2xx,
// an error naming endpoint and the status. now resolves a Retry-After
// given as a date when the answer has no Date header.
func Classify(endpoint string, resp *http.Response, body []byte, now time.Time) (notify.Result, error) {
	res := notify.Result{Status: resp.StatusCode, Answer: Trim(string(body))}
	code := resp.StatusCode
	switch {
	case code >= 200 && code < 300:
		return res, nil
	case code == http.StatusTooManyRequests:
		res.Retry = true
		res.RetryAfter = RetryAfter(resp.Header, now)
	case code >= 500:
		res.Retry = true
		res.RetryAfter = RetryAfter(resp.Header, now)
	}
	msg := resp.Status
	if msg == "" {
		msg = strconv.Itoa(code)
	}
	if res.Answer != "" {
		return res, fmt.Errorf("post to %s: %s: %s", endpoint, msg, res.Answer)
	}
	return res, fmt.Errorf("post to %s: %s", endpoint, msg)
}

// ClassifyError turns a transport error (no answer) into a Result: retried
// unless the server's certificate is not trusted, which another attempt
// will not change.
func ClassifyError(endpoint string, err error) (notify.Result, error) {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err // its text holds the whole URL
	}
	var (
		unknownCA *x509.UnknownAuthorityError
		invalid   *x509.CertificateInvalidError
		hostname  *x509.HostnameError
		verify    *tls.CertificateVerificationError
	)
	retry := !(errors.As(err, &unknownCA) || errors.As(err, &invalid) ||
		errors.As(err, &hostname) || errors.As(err, &verify))
	return notify.Result{Retry: retry}, fmt.Errorf("post to %s: %w", endpoint, err)
}

// RetryAfter reads h's Retry-After, in seconds or as an HTTP date (relative
// to h's Date when present, else to now, so a skewed clock on either side
// does not matter). Absent, unreadable or past: 0. At most MaxRetryAfter.
func RetryAfter(h http.Header, now time.Time) time.Duration {
	v := strings.TrimSpace(h.Get("Retry-After"))
	if v == "" {
		return 0
	}
	var d time.Duration
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		if secs <= 0 {
			return 0
		}
		if secs > int64(MaxRetryAfter/time.Second) {
			return MaxRetryAfter
		}
		d = time.Duration(secs) * time.Second
	} else {
		at, err := http.ParseTime(v)
		if err != nil {
			return 0
		}
		if date, err := http.ParseTime(h.Get("Date")); err == nil {
			now = date
		}
		d = at.Sub(now)
	}
	return min(max(d, 0), MaxRetryAfter)
}

// Trim is s cut to MaxAnswer bytes (on a rune boundary) with surrounding
// space removed: what NOTIFY records of an answer.
func Trim(s string) string {
	s = strings.TrimSpace(s)
	if len(s) <= MaxAnswer {
		return s
	}
	cut := MaxAnswer
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

// Endpoint is raw's scheme and host, what errors and logs may show of a
// receiver's URL.
func Endpoint(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return "(invalid URL)"
	}
	return u.Scheme + "://" + u.Host
}

// CheckURL is the config check of an endpoint: an absolute http or https
// URL. The error shows the URL only by Endpoint.
func CheckURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return errors.New("is not a URL")
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return fmt.Errorf("scheme %q is not http or https", u.Scheme)
	}
	if u.Host == "" {
		return errors.New("has no host")
	}
	return nil
}
