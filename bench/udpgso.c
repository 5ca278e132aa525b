/*
 * The syscall-path limit for the UDP packet-rate benchmark: a plain C loop of sendmsg(UDP_SEGMENT), and a
 * recvmmsg(UDP_GRO) sink. Built by the bench with `cc -O2` into bench/.work/udpgso (not part of the
 * package). Each mode runs for a fixed time and prints one JSON line.
 *
 *   udpgso send ADDR PORT SIZE SECONDS   as many segments per send as fit (at most 64, 65,507 bytes)
 *   udpgso recv ADDR PORT SECONDS        counts datagrams until SECONDS pass or 1 s without traffic
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103
#endif
#ifndef UDP_GRO
#define UDP_GRO 104
#endif

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec / 1e9;
}

static void address(const char *host, int port, struct sockaddr_in *sa) {
  memset(sa, 0, sizeof *sa);
  sa->sin_family = AF_INET;
  sa->sin_port = htons(port);
  if (inet_pton(AF_INET, host, &sa->sin_addr) != 1) {
    fprintf(stderr, "udpgso: bad IPv4 address %s\n", host);
    exit(64);
  }
}

static int udp_socket(void) {
  int fd = socket(AF_INET, SOCK_DGRAM, 0);
  int buf = 7 << 20;
  if (fd < 0) { perror("socket"); exit(1); }
  setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &buf, sizeof buf);
  setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &buf, sizeof buf);
  return fd;
}

static int send_loop(const char *host, int port, int size, double seconds) {
  struct sockaddr_in dst;
  address(host, port, &dst);
  int fd = udp_socket();
  int segs = 65507 / size;
  if (segs > 64) segs = 64;
  if (segs < 1) segs = 1;
  size_t len = (size_t)segs * size;
  char *payload = calloc(1, len);
  char control[CMSG_SPACE(sizeof(uint16_t))];
  struct iovec iov = { payload, len };
  struct msghdr msg = { .msg_name = &dst, .msg_namelen = sizeof dst, .msg_iov = &iov, .msg_iovlen = 1 };
  if (segs > 1) {
    memset(control, 0, sizeof control);
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_UDP;
    c->cmsg_type = UDP_SEGMENT;
    c->cmsg_len = CMSG_LEN(sizeof(uint16_t));
    uint16_t gso = (uint16_t)size;
    memcpy(CMSG_DATA(c), &gso, sizeof gso);
  }
  uint64_t datagrams = 0, syscalls = 0, errors = 0;
  double t0 = now(), t = t0, end = t0 + seconds;
  /* Bounded by time: the clock is read every 64 sends. */
  while (t < end) {
    for (int i = 0; i < 64; i++) {
      syscalls++;
      if (sendmsg(fd, &msg, 0) < 0) errors++;
      else datagrams += segs;
    }
    t = now();
  }
  printf("{\"datagrams\":%llu,\"bytes\":%llu,\"seconds\":%.6f,\"syscalls\":%llu,\"errors\":%llu,\"segmentsPerSend\":%d}\n",
         (unsigned long long)datagrams, (unsigned long long)datagrams * size, t - t0, (unsigned long long)syscalls,
         (unsigned long long)errors, segs);
  return 0;
}

enum { MSGS = 32, BUF = 65536 };

static int recv_loop(const char *host, int port, double seconds) {
  struct sockaddr_in local;
  address(host, port, &local);
  int fd = udp_socket();
  int on = 1;
  setsockopt(fd, SOL_UDP, UDP_GRO, &on, sizeof on);
  if (bind(fd, (struct sockaddr *)&local, sizeof local) < 0) { perror("bind"); return 1; }
  static char bufs[MSGS][BUF];
  static char controls[MSGS][CMSG_SPACE(sizeof(int))];
  struct iovec iov[MSGS];
  struct mmsghdr msgs[MSGS];
  printf("listening\n");
  fflush(stdout);
  uint64_t datagrams = 0, bytes = 0, syscalls = 0;
  double first = 0, last = 0, start = now(), end = start + seconds;
  while (now() < end) {
    struct pollfd p = { fd, POLLIN, 0 };
    if (poll(&p, 1, 1000) <= 0) {
      if (datagrams > 0) break; /* traffic stopped */
      continue;
    }
    for (int i = 0; i < MSGS; i++) {
      iov[i] = (struct iovec){ bufs[i], BUF };
      memset(&msgs[i], 0, sizeof msgs[i]);
      msgs[i].msg_hdr.msg_iov = &iov[i];
      msgs[i].msg_hdr.msg_iovlen = 1;
      msgs[i].msg_hdr.msg_control = controls[i];
      msgs[i].msg_hdr.msg_controllen = sizeof controls[i];
    }
    int n = recvmmsg(fd, msgs, MSGS, MSG_DONTWAIT, NULL);
    if (n <= 0) continue;
    syscalls++;
    double t = now();
    if (datagrams == 0) first = t;
    last = t;
    for (int i = 0; i < n; i++) {
      unsigned len = msgs[i].msg_len;
      int stride = 0;
      for (struct cmsghdr *c = CMSG_FIRSTHDR(&msgs[i].msg_hdr); c; c = CMSG_NXTHDR(&msgs[i].msg_hdr, c))
        if (c->cmsg_level == SOL_UDP && c->cmsg_type == UDP_GRO) memcpy(&stride, CMSG_DATA(c), sizeof stride);
      datagrams += stride > 0 ? (len + stride - 1) / stride : 1;
      bytes += len;
    }
  }
  printf("{\"datagrams\":%llu,\"bytes\":%llu,\"seconds\":%.6f,\"syscalls\":%llu}\n", (unsigned long long)datagrams,
         (unsigned long long)bytes, last - first, (unsigned long long)syscalls);
  return 0;
}

int main(int argc, char **argv) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  if (argc == 6 && strcmp(argv[1], "send") == 0) return send_loop(argv[2], atoi(argv[3]), atoi(argv[4]), atof(argv[5]));
  if (argc == 5 && strcmp(argv[1], "recv") == 0) return recv_loop(argv[2], atoi(argv[3]), atof(argv[4]));
  fprintf(stderr, "usage: udpgso send ADDR PORT SIZE SECONDS | udpgso recv ADDR PORT SECONDS\n");
  return 64;
}
