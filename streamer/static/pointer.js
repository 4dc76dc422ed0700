// Mouse / pen / touch gestures on the prompt layer, in source frame pixels.
//
// A press that moves less than dragPx is a click (right button or Alt: negative; Shift: for a
// new object); more is a box drag. Coordinates are mapped from the element's box to the frame
// (the layer has the frame's aspect ratio), clamped to the frame, rounded to 0.1 px.

const round = (v) => Math.round(v * 10) / 10;

export class PointerGestures {
  /**
   * layer: the element taking the pointer. frameSize(): [width, height] of the frame shown, or
   * null (gestures are ignored then). onClick({point, negative, newObject}),
   * onBox({box: [x0, y0, x1, y1], newObject}), onChange(): the drag rectangle moved.
   */
  constructor(layer, { frameSize, onClick, onBox, onChange, dragPx = 6 }) {
    this.layer = layer;
    this.frameSize = frameSize;
    this.dragPx = dragPx;
    this.press = null; // {start: [clientX, clientY], point, drag, negative, newObject}
    layer.addEventListener("contextmenu", (event) => event.preventDefault());
    layer.addEventListener("pointerdown", (event) => {
      if (!frameSize() || (event.button !== 0 && event.button !== 2)) return;
      layer.setPointerCapture(event.pointerId);
      this.press = {
        start: [event.clientX, event.clientY],
        point: this.toFrame(event),
        drag: null,
        negative: event.button === 2 || event.altKey,
        newObject: event.shiftKey,
      };
    });
    layer.addEventListener("pointermove", (event) => {
      if (!this.press) return;
      this.press.drag = this.moved(event) ? this.toFrame(event) : null;
      onChange();
    });
    layer.addEventListener("pointerup", (event) => {
      const press = this.press;
      this.press = null;
      if (!press || !this.frameSize()) return;
      if (this.moved(event, press) && !press.negative) {
        const end = this.toFrame(event);
        const box = [
          Math.min(press.point[0], end[0]),
          Math.min(press.point[1], end[1]),
          Math.max(press.point[0], end[0]),
          Math.max(press.point[1], end[1]),
        ];
        onBox({ box, newObject: press.newObject });
      } else {
        onClick({ point: press.point, negative: press.negative, newObject: press.newObject });
      }
      onChange();
    });
    layer.addEventListener("pointercancel", () => {
      this.press = null;
      onChange();
    });
  }

  /** The box being dragged ([x0, y0, x1, y1], corners in drag order) or null. */
  dragBox() {
    const press = this.press;
    return press && press.drag ? [...press.point, ...press.drag] : null;
  }

  moved(event, press = this.press) {
    return Math.hypot(event.clientX - press.start[0], event.clientY - press.start[1]) >= this.dragPx;
  }

  toFrame(event) {
    const rect = this.layer.getBoundingClientRect();
    const [width, height] = this.frameSize();
    const x = ((event.clientX - rect.left) / rect.width) * width;
    const y = ((event.clientY - rect.top) / rect.height) * height;
    return [round(Math.min(Math.max(x, 0), width - 1)), round(Math.min(Math.max(y, 0), height - 1))];
  }
}
