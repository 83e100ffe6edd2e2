#!/usr/bin/env bash
# build-guest.sh OUT_DIR: the tiny guest of the end-to-end test, from Debian packages only
# (linux-image-cloud-amd64, busybox-static): OUT_DIR/vmlinuz (the cloud kernel) and
# OUT_DIR/initrd.gz (busybox, the modules that read a CD-ROM, and an /init). The guest mounts
# the cidata seed Berth attached, prints what it was given on its serial console
# (BERTH-GUEST lines: instance-id, hostname, the first SSH key's comment, the address of its
# network-config), then reads the seed again every second and says it all again when it names
# another VM (a pooled guest handed out). No disk or network driver: it needs neither to prove
# the seed.
set -euo pipefail
out=${1:?usage: build-guest.sh OUT_DIR}
kver=$(ls /lib/modules | grep -- '-cloud-amd64$' | sort -V | tail -n 1)
[ -n "$kver" ] || { echo "build-guest: no cloud kernel in /lib/modules (install linux-image-cloud-amd64)" >&2; exit 1; }
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root"/{bin,mods,proc,sys,dev,mnt}
cp /bin/busybox "$root/bin/busybox"
# The CD-ROM on the IDE bus of QEMU's pc machine, and ISO 9660; in load order.
for m in scsi_common scsi_mod cdrom sr_mod libata ata_piix isofs; do
    cp "$(modinfo -k "$kver" -F filename "$m")" "$root/mods/$m.ko"
done
cat > "$root/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in scsi_common scsi_mod cdrom sr_mod libata ata_piix isofs; do insmod /mods/$m.ko; done
i=0
while [ ! -b /dev/sr0 ] && [ $i -lt 50 ]; do sleep 0.2; i=$((i + 1)); done
# What the seed says, as BERTH-GUEST lines.
report() {
    echo "BERTH-GUEST seed: $(cat /proc/mounts | grep -c ' /mnt ') mounted"
    echo "BERTH-GUEST instance-id: $(sed -n 's/^instance-id: *//p' /mnt/meta-data)"
    echo "BERTH-GUEST hostname: $(sed -n 's/^local-hostname: *//p' /mnt/meta-data)"
    key=$(sed -n "/^ssh_authorized_keys:/{n;p;}" /mnt/user-data | sed "s/^ *- *'//; s/'\$//")
    echo "BERTH-GUEST ssh-key-comment: $(echo "$key" | cut -d' ' -f3-)"
    if [ -f /mnt/network-config ]; then
        echo "BERTH-GUEST address: $(sed -n 's/^ *- *\([0-9.]*\/[0-9]*\).*/\1/p' /mnt/network-config | head -n 1)"
    fi
}
if mount -t iso9660 -o ro /dev/sr0 /mnt; then
    report
else
    echo "BERTH-GUEST seed: not mounted"
fi
echo "BERTH-GUEST done"
# Then it reads its seed again every second (a resume hook in its simplest form: a guest
# resumed from its template's pool finds the seed of the VM it became) and says it all again
# when the seed names another VM.
last=$(sed -n 's/^local-hostname: *//p' /mnt/meta-data 2>/dev/null)
while true; do
    sleep 1
    umount /mnt 2>/dev/null
    echo 3 > /proc/sys/vm/drop_caches
    mount -t iso9660 -o ro /dev/sr0 /mnt 2>/dev/null || continue
    now=$(sed -n 's/^local-hostname: *//p' /mnt/meta-data)
    if [ -n "$now" ] && [ "$now" != "$last" ]; then
        echo "BERTH-GUEST reread"
        report
        echo "BERTH-GUEST done"
        last=$now
    fi
done
INIT
chmod +x "$root/init"
mkdir -p "$out"
cp "/boot/vmlinuz-$kver" "$out/vmlinuz"
(cd "$root" && find . | cpio -o -H newc --quiet | gzip -9) > "$out/initrd.gz"
