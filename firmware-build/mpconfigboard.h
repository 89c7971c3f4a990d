// The tuned node firmware (README.md here). tools/flash.py checks this name after a flash:
// it shows in sys.implementation._machine as "City sensor node (tuned) with ESP32".
#define MICROPY_HW_BOARD_NAME "City sensor node (tuned)"
#define MICROPY_HW_MCU_NAME "ESP32"
