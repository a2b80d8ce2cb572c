# Debian's rtsp-server-perl (the RTSP::Server module), started the way /usr/bin/rtsp-server-perl starts it,
# with three changes the test harness needs:
#  - RTSP::Server resets its RTP port counter to the package global $RTP_START_PORT (20000) whenever no
#    stream is mounted, forgetting --rtp_start_port; pin the global to the option so that servers started
#    side by side (parallel test runs) keep to their own UDP ports.
#  - exit cleanly on SIGTERM as well as SIGINT, and when the process that started us is gone (no orphans).
#  - flush each log line as it is written, so the harness can show the log when a test fails.
use strict;
use warnings;
use AnyEvent;
use RTSP::Server;

$| = 1;
my $parent = getppid();
my $srv = RTSP::Server->new_with_options();
$RTSP::Server::RTP_START_PORT = $srv->rtp_start_port;
$srv->listen;

my $done = AnyEvent->condvar;
my @signals = map { AnyEvent->signal(signal => $_, cb => sub { $done->send }) } qw(INT TERM);
my $orphan_check = AnyEvent->timer(after => 1, interval => 1, cb => sub { $done->send if getppid() != $parent });
$done->recv;
