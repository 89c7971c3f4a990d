# WiFi on the sim board: the "access point" is the scenario (signal "wifi": 0 takes it down;
# board.json "wlan" names the one network that accepts the node), the network is real UDP on
# 127.0.0.1 with waits scaled by the board's speed.

import select
import socket


def wlan_connect(board, ssid, password, timeout_ms):
    up = board.signals().get("wifi", 1)
    wanted = board.settings.get("wlan")
    if wanted and (wanted.get("ssid") != ssid or wanted.get("password") != password):
        up = 0
    # association takes a few hundred ms on a real chip; the sim charges a fixed 300 ms
    board.sleep_ms(min(300, timeout_ms) if up else timeout_ms)
    return bool(up)


class UDP:
    def __init__(self, board, port=0):
        self._board = board
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind(socket.getaddrinfo("127.0.0.1", port)[0][-1])
        self._poll = select.poll()
        self._poll.register(self._sock, select.POLLIN)
        self._addrs = {}

    def sendto(self, data, addr):
        if not self._board.signals().get("wifi", 1):
            return len(data)  # the access point is gone: the frame leaves and is lost
        if not isinstance(addr, tuple):
            return self._sock.sendto(data, addr)  # an address recvfrom() gave
        sa = self._addrs.get(addr)
        if sa is None:
            sa = self._addrs[addr] = socket.getaddrinfo(addr[0], addr[1])[0][-1]
        return self._sock.sendto(data, sa)

    def recv(self, timeout_ms):
        got = self.recvfrom(timeout_ms)
        return None if got is None else got[0]

    def recvfrom(self, timeout_ms):
        """(datagram, sender) or None once timeout_ms of board time has passed (0: only what
        is already there)."""
        board = self._board
        end = board.epoch_ms() + timeout_ms
        while True:
            board.service()
            left = end - board.epoch_ms()
            if left > 0:
                board._check_watchdog()
            # short real slices keep the control socket and pin interrupts served meanwhile
            real = max(0, int(min(left, 20 * board.speed) / board.speed))
            if self._poll.poll(real):
                got = self._sock.recvfrom(1280)
                if board.signals().get("wifi", 1):
                    return got
            elif left <= 0:
                return None

    def close(self):
        self._sock.close()
