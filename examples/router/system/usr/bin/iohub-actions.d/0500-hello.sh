#!/bin/sh
# A sample bootstrap action: runs in its own process, with a timeout, when iohubd runs with --apply.
echo "hello from an iohub action"
