package conf

import (
	"net"
	"strconv"
	"strings"
)

// IsLoopback reports whether host is localhost or a loopback address: a
// listener there is reachable only from this machine.
func IsLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// CheckListen adds a problem under key unless addr is host:port with a
// port from 0 to 65535, and reports whether it is on loopback.
func CheckListen(p Problems, key, addr string) (loopback bool) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		p.Addf(key, "%q is not host:port: %v", addr, err)
		return false
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		p.Addf(key, "%q: port %q is not a number from 0 to 65535", addr, port)
	}
	return IsLoopback(host)
}
