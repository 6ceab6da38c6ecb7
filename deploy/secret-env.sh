#!/bin/sh
# secret-env.sh NAME=FILE ... -- COMMAND [ARG...]
#
# Sets each NAME to the contents of FILE (trailing newlines removed, as
# otawatch reads its *_file keys) and runs COMMAND in its place. For the
# third-party servers in docker-compose.yml that take a password only from
# an environment variable (nats-server's $VAR in deploy/nats/cluster.conf,
# the ClickHouse image's CLICKHOUSE_PASSWORD), so the password itself stays
# in a Docker secret file, never in the compose file or `docker inspect`.
set -eu
while [ "$#" -gt 0 ] && [ "$1" != "--" ]; do
	name=${1%%=*}
	file=${1#*=}
	case $name in
	"" | *[!A-Za-z0-9_]* | [0-9]*)
		echo "secret-env.sh: \"$1\" is not NAME=FILE (NAME: letters, digits, _)" >&2
		exit 2
		;;
	esac
	if [ "$name" = "$1" ]; then
		echo "secret-env.sh: \"$1\" is not NAME=FILE (no =)" >&2
		exit 2
	fi
	if [ ! -r "$file" ]; then
		echo "secret-env.sh: $name: cannot read the file \"$file\"" >&2
		exit 1
	fi
	value=$(cat "$file")
	export "$name=$value"
	shift
done
if [ "$#" -lt 2 ]; then
	echo "usage: secret-env.sh NAME=FILE ... -- COMMAND [ARG...]" >&2
	exit 2
fi
shift
exec "$@"
