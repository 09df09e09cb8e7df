#!/bin/sh
# As the upstream redis image: options alone mean redis-server; as root, hand /data to the redis
# user and run as it; without a config file, protected mode is off (the container's network is
# the boundary).
set -e
case "$1" in -*|*.conf) set -- redis-server "$@" ;; esac
if [ "$1" = "redis-server" ] && [ "$(id -u)" = "0" ]; then
  find . \! -user redis -exec chown redis '{}' +
  exec setpriv --reuid=redis --regid=redis --init-groups "$0" "$@"
fi
if [ "$1" = "redis-server" ]; then
  case "$2" in *.conf) ;; *) set -- "$@" --protected-mode no ;; esac
fi
umask 0077
exec "$@"
